"""finegrain.evaluate"""
