"""Getting CIFAR-10 in: the sources params.yaml's data.source names (the official archive, a
local archive or class-folder tree, a synthetic set), read whole, checked and decoded into splits.
"""
