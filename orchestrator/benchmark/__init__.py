"""medsynth benchmark: does a classifier trained with the synthetic images do better on held-out real patients?"""
