"""finegrain.data"""
