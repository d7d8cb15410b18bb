"""constcl.eval"""
