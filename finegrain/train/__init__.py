"""finegrain.train"""
