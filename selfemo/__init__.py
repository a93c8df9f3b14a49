"""selfemo"""
