"""The micro vHeat model the model, export, checkpoint and downstream tests build (no tests here).

Four stages on a 64 px input (stage grids 16, 8, 4, 2), small enough for one thread. A test that
needs other values says so with ``dict(MICRO, dims=8)`` and the like.
"""
MICRO = dict(depths=(1, 1, 2, 1), dims=16, img_size=64)
