"""Tests for scripts/causal/extract/features.py: config keys, code structure and prose -> canonical features."""
from __future__ import annotations

from scripts.causal.extract import features as fr


def values(d):
    return {k: v for k, (v, _) in d.items()}


def test_config_dump_of_a_modern_record():
    cfg = {"num_layers": "11", "model_dim": "512", "mlp_mult": "4.0", "vocab_size": "8192", "train_seq_len": "2048",
           "tie_embeddings": "True", "xsa_last_n": "11", "rope_dims": "16", "ln_scale": "True", "num_loops": "2",
           "loop_start": "3", "parallel_start_layer": "8", "qk_gain_init": "5.25", "muon_wd": "0.095",
           "muon_row_normalize": "True", "ema_decay": "0.9965", "matrix_bits": "6", "gptq_calibration_batches": "16",
           "compressor": "brotli", "eval_stride": "64", "ttt_enabled": "True", "ttt_lora_rank": "96",
           "warmdown_frac": "0.75", "caseops_enabled": "True", "gated_attn_enabled": "False",
           "sparse_attn_gate_enabled": "True", "smear_gate_enabled": "False", "skip_gates_enabled": "True"}
    got = values(fr.features_from_config(cfg))
    assert got == {
        "num_layers": 11, "model_dim": 512, "mlp_mult": 4.0, "vocab_size": 8192, "train_seq_len": 2048,
        "tied_embeddings": True, "xsa": True, "partial_rope": True, "ln_scale": True, "depth_recurrence": True,
        "parallel_residuals": True, "qk_gain": 5.25, "muon": True, "muon_weight_decay": True, "muoneq_r": True,
        "ema": True, "quant_bits": 6.0, "gptq": "full", "compression": "brotli", "sliding_window_eval": True,
        "ttt": True, "lora_ttt": True, "warmdown_iters": None, "caseops": True, "attention_gate": True,
        "smeargate": False, "unet_skips": True}


def test_config_edge_values():
    got = values(fr.features_from_config({"num_loops": "1", "rope_dims": "0", "xsa_last_n": "0", "ema_decay": "0",
                                          "eval_stride": "1024", "train_seq_len": "1024", "parallel_start_layer": "-1",
                                          "model_dim": "512", "mlp_hidden": "992", "mlp_mult": "2",
                                          "warmdown_iters": "3_600", "use_zstd": "1"}))
    assert got["depth_recurrence"] is False and got["partial_rope"] is False and got["xsa"] is False
    assert got["ema"] is False and got["sliding_window_eval"] is False and got["parallel_residuals"] is False
    assert got["mlp_mult"] == 1.9375  # explicit hidden size wins over the multiplier
    assert got["warmdown_iters"] == 3600 and got["compression"] == "zstd"


def test_leaky_slope_and_activation_names():
    assert values(fr.features_from_config({"negative_slope": "0.5"}))["activation"] == "leaky_relu2"
    assert values(fr.features_from_config({"activation": "swiglu"}))["activation"] == "swiglu"
    assert values(fr.features_from_config({"activation": "mish"}))["activation"] == "other"


def test_code_structure_rules():
    code = ("class SmearGate(nn.Module):\n    pass\n"
            "x = self.smear(x)\nnn.init.orthogonal_(w)\nself.skip_weights = 1\n"
            "x = F.leaky_relu(self.fc(x), negative_slope=0.5).square()\n")
    assert values(fr.features_from_code(code)) == {"smeargate": True, "orthogonal_init": True, "unet_skips": True,
                                                   "activation": "leaky_relu2"}
    assert values(fr.features_from_code("class SmearGate(nn.Module):\n    pass\n")) == {}  # defined, never used


def test_prose_positive_mentions_and_numbers():
    text = ("11L, 512d, MLP 3x, SP8192, seq_len 2048. SmearGate + BigramHash(2048), XSA on the last 4 layers, "
            "Partial RoPE (16/64), LN scale, U-Net skips, QK-Gain 5.25, LeakyReLU(0.5)^2, EMA 0.997, "
            "full Hessian GPTQ int6 + brotli, sliding window eval, score-first TTT.")
    got = values(fr.features_from_prose(text))
    for k, v in {"num_layers": 11, "model_dim": 512, "mlp_mult": 3.0, "vocab_size": 8192, "train_seq_len": 2048,
                 "smeargate": True, "bigram_hash": True, "xsa": True, "partial_rope": True, "ln_scale": True,
                 "unet_skips": True, "qk_gain": 5.25, "activation": "leaky_relu2", "ema": True, "gptq": "full",
                 "quant_bits": 6.0, "compression": "brotli", "sliding_window_eval": True, "ttt": True}.items():
        assert got[k] == v, k


def test_prose_negations_give_false():
    got = values(fr.features_from_prose("No TTT, no SLOT. EMA replacing SWA. SmearGate removed. "
                                        "Trained without QAT."))
    assert got["ttt"] is False and got["swa"] is False and got["smeargate"] is False and got["qat"] is False
    assert got["ema"] is True


def test_lookalike_gate_names_all_map_to_attention_gate():
    for name in ("GatedAttn", "SparseAttnGate", "AttnOutGate", "attention output gate"):
        assert values(fr.features_from_prose(f"We add {name} on every layer."))["attention_gate"] is True, name


def test_swa_described_as_an_ema_is_an_ema():
    got = values(fr.features_from_prose("SWA: in our code this is an exponential moving average (decay 0.997)."))
    assert got["ema"] is True and got["swa"] is False


def test_dead_code_mention_wins_over_the_name():
    got = values(fr.features_from_prose("# 11L + Late QAT\n\nThe late QAT flag was dead code, never activated."))
    assert got["qat"] is False


def test_negative_sections_are_dropped():
    readme = ("# Final\n\nint6 QAT, EMA.\n\n## What didn't work\n\n- TTT: worse.\n- SmearGate: no gain.\n\n"
              "## Results\n\nEMA again.\n")
    kept = fr.positive_text(readme)
    assert "SmearGate" not in kept and "TTT" not in kept and "EMA again" in kept
    got = values(fr.features_from_prose(kept))
    assert "smeargate" not in got and "ttt" not in got and got["qat"] is True


def test_quant_bits_special_formats():
    assert values(fr.features_from_prose("73.7M params, ternary weights"))["quant_bits"] == 1.58
    assert values(fr.features_from_prose("binary weights {-1,+1}"))["quant_bits"] == 1.0
    assert values(fr.features_from_prose("int5 MLP, int5 attention, int8 embeddings"))["quant_bits"] == 5.0


def test_table_rows_are_read_as_prose():
    got = values(fr.features_from_prose("| Layers | 11 (512d, 8H) |\n|---|---|\n| MLP | 3× with LeakyReLU |\n"))
    assert got["num_layers"] == 11 and got["mlp_mult"] == 3.0 and got["activation"] == "leaky_relu2"


def test_unique_blocks_and_untied_embeddings():
    got = values(fr.features_from_prose("3 unique blocks looped 4 times (12 effective layers), untied embeddings."))
    assert got["num_layers"] == 3 and got["tied_embeddings"] is False
    assert values(fr.features_from_prose("9 layers with tied embeddings"))["tied_embeddings"] is True


def test_recurrence_means_repeated_layers_not_recurrent_ssms():
    assert values(fr.features_from_prose("3-layer recurrence (layers 3,4,5)"))["depth_recurrence"] is True
    assert values(fr.features_from_prose("Layers 4-5 looped twice"))["depth_recurrence"] is True
    assert "depth_recurrence" not in values(fr.features_from_prose("Gated DeltaNet linear-recurrent layers"))


def test_fraction_warmdown_is_null_and_variable_length_attention():
    got = values(fr.features_from_prose("warmdown=0.72, variable-length FA3 attention"))
    assert got["warmdown_iters"] is None and got["varlen_attention"] is True
    assert values(fr.features_from_prose("warmdown 3500 iterations"))["warmdown_iters"] == 3500
