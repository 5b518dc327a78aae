"""Scan tiny random-weight Hugging Face TF models and compare with the live models (a manual check).

For each ``Config:TFModelClass`` given (default: a list of 30 architectures), shrink the default
config, build the model, ``save_pretrained`` it into a temporary directory and scan that directory.
Prints, per model, whether the scanned paths equal the model's variable names, trainability
mismatches, variables of Keras' own layers whose kind differs from the layer's role, and each
variable of an HF layer class with the kind it got (to review). Needs tensorflow, tf_keras and
transformers 4.x. Usage: ``python scripts/hf_zoo_check.py [Config:Model ...]``.
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

KERAS_ROLES = {
    "kernel": "kernel",
    "bias": "bias",
    "gamma": "norm",
    "beta": "norm",
    "embeddings": "embedding",
    "moving_mean": "statistic",
    "moving_variance": "statistic",
    "depthwise_kernel": "kernel",
    "pointwise_kernel": "kernel",
}
SHRINK = dict(
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    vocab_size=64,
    d_model=16,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    n_embd=16,
    n_layer=1,
    n_head=2,
    num_layers=1,
    num_heads=2,
    d_ff=32,
    d_kv=8,
    embedding_size=16,
    d_inner=32,
    n_positions=64,
    max_position_embeddings=64,
    num_key_value_heads=1,
    rotary_dim=4,
    head_dim=8,
)
DEFAULT = """BertConfig:TFBertModel GPT2Config:TFGPT2LMHeadModel T5Config:TFT5ForConditionalGeneration
RobertaConfig:TFRobertaForMaskedLM DistilBertConfig:TFDistilBertModel ViTConfig:TFViTModel
BartConfig:TFBartForConditionalGeneration AlbertConfig:TFAlbertForMaskedLM ElectraConfig:TFElectraForPreTraining
DebertaV2Config:TFDebertaV2Model SwinConfig:TFSwinModel ConvNextConfig:TFConvNextModel
MobileBertConfig:TFMobileBertForMaskedLM MarianConfig:TFMarianMTModel OPTConfig:TFOPTForCausalLM
MPNetConfig:TFMPNetForMaskedLM RemBertConfig:TFRemBertForMaskedLM ConvBertConfig:TFConvBertModel
DeiTConfig:TFDeiTForImageClassificationWithTeacher Data2VecVisionConfig:TFData2VecVisionModel
ResNetConfig:TFResNetModel SegformerConfig:TFSegformerModel Wav2Vec2Config:TFWav2Vec2Model
CTRLConfig:TFCTRLLMHeadModel XLMConfig:TFXLMWithLMHeadModel LEDConfig:TFLEDForConditionalGeneration
MistralConfig:TFMistralForCausalLM GPTJConfig:TFGPTJForCausalLM""".split()


def check(spec: str, transformers, scan) -> tuple[int, int, int]:
    """(variables, decisions checked automatically, wrong); prints the details."""
    config_name, model_name = spec.split(":")
    config = getattr(transformers, config_name)()
    for key, value in SHRINK.items():
        if isinstance(getattr(config, key, None), int):
            setattr(config, key, value)
    model = getattr(transformers, model_name)(config)
    model(model.dummy_inputs)
    owners = {}
    for layer in [model, *model.submodules]:
        if hasattr(layer, "_trainable_weights"):
            builtin = type(layer).__module__.startswith(("tf_keras", "keras"))
            for weight in list(layer._trainable_weights) + list(layer._non_trainable_weights):
                owners[weight.name[:-2]] = (type(layer).__name__, builtin)
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        report = scan(directory)
    got = {v.record.path: v for v in report.variables}
    names = [w.name[:-2] for w in model.weights]
    print(f"== {model_name}: {len(names)} variables, scan {len(got)}, paths equal: {set(names) == set(got)}")
    checked = wrong = 0
    for weight in model.weights:
        name = weight.name[:-2]
        found = got.get(name)
        if found is None:
            print(f"   MISSING {name}")
            wrong += 1
            continue
        cls, builtin = owners.get(name, ("?", False))
        kind = found.classification.kind.value
        if found.record.trainable != weight.trainable:
            print(f"   TRAINABLE {name}: scan {found.record.trainable}, model {weight.trainable}")
            wrong += 1
        if builtin:
            checked += 1
            if KERAS_ROLES.get(name.rsplit("/", 1)[-1]) != kind:
                print(f"   WRONG {cls} {name}: {kind}")
                wrong += 1
        else:
            print(
                f"   review {cls}.{name.rsplit('/', 1)[-1]} {tuple(found.record.shape)}: {kind} "
                f"({found.classification.confidence.value})"
            )
    return len(names), checked, wrong


def main(specs: list[str]) -> None:
    import transformers

    from decay_audit import scan

    totals = [0, 0, 0]
    for spec in specs:
        try:
            for i, value in enumerate(check(spec, transformers, scan)):
                totals[i] += value
        except Exception as exc:  # a config the generic shrink cannot build
            print(f"!! {spec}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    print(f"total variables {totals[0]}, Keras-layer variables checked {totals[1]}, wrong {totals[2]}")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
