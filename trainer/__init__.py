"""selfemo.trainer"""
