"""Training and its parts: the recipe (model, loss, optimizer, OneCycle, loaders from params),
the loop with its checkpoints and stop requests, the LR range test, augmentation on the device,
the chance-level test and predictions over a loader.
"""
