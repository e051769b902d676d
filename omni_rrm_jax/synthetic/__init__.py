"""Generated preference data for the main job and the tiny configs, and the
simulated teachers that label it.

Synthetic data is a source a config asks for by name (`data.train_path="synthetic"`),
never what an empty path falls back to.
"""
