import os


class Hyperparameters:
    num_layers = int(os.environ.get("NUM_LAYERS", 11))
    model_dim = int(os.environ.get("MODEL_DIM", 512))
    xsa_last_n = int(os.environ.get("XSA_LAST_N", 0))
    rope_dims = int(os.environ.get("ROPE_DIMS", 16))
    qk_gain_init = float(os.environ.get("QK_GAIN_INIT", 4.0))
    warmdown_iters = int(os.environ.get("WARMDOWN_ITERS", 3_500))
