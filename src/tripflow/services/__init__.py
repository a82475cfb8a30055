"""tripflow.services"""
