"""tripflow.records"""
