"""constcl.losses"""
