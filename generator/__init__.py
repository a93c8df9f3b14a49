"""selfemo.generator"""
