"""constcl.engine"""
