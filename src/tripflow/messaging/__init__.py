"""tripflow.messaging"""
