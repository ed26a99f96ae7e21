"""ocppj"""
