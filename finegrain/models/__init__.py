"""finegrain.models"""
