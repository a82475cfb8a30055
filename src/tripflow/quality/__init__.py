"""tripflow.quality"""
