"""tripflow.marts"""
