"""tripflow.processing"""
