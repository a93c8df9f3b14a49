"""selfemo.operator"""
