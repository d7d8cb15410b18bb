"""constcl.models"""
