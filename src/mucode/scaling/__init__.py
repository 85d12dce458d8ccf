"""Running mucode past one machine: rollouts on a Ray cluster (`mucode.scaling.ray_rollouts`).

Nothing here is imported by `import mucode`; Ray is an optional extra (`pip install 'mucode[ray]'`).
See docs/scaling.md for multi-GPU and multi-node recipes.
"""
