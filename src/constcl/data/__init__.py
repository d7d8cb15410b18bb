"""constcl.data"""
