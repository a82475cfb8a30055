"""tripflow.cli"""
