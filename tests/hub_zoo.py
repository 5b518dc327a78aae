"""Tiny random-weight keras_hub models (backbones and task models), built in code, never downloaded.

Each builder returns a model with 1-2 layers, hidden size 8-16, vocabulary 50 and small
images, so the whole zoo builds and saves in well under a minute on 2 cores. Used by
tests/test_keras_hub_zoo.py (session-scoped: every model is built and saved once).
"""

from __future__ import annotations

from collections.abc import Callable

VOCAB = 50
TEXT = dict(vocabulary_size=VOCAB, num_layers=1, hidden_dim=8, intermediate_dim=16)


def _hub():
    import keras_hub

    return keras_hub.models


def _bert():
    return _hub().BertBackbone(num_heads=2, max_sequence_length=16, **TEXT)


def _gpt2():
    return _hub().GPT2Backbone(num_heads=2, max_sequence_length=16, **TEXT)


def _clip():
    m = _hub()
    vision = m.CLIPVisionEncoder(
        patch_size=8, hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16, image_shape=(16, 16, 3)
    )
    text = m.CLIPTextEncoder(
        vocabulary_size=VOCAB,
        embedding_dim=8,
        hidden_dim=8,
        num_layers=1,
        num_heads=2,
        intermediate_dim=16,
        max_sequence_length=8,
    )
    return m.CLIPBackbone(vision_encoder=vision, text_encoder=text, projection_dim=8)


BACKBONES: dict[str, Callable] = {
    "bert": _bert,
    "vit": lambda: _hub().ViTBackbone(
        image_shape=(16, 16, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16
    ),
    "llama": lambda: _hub().LlamaBackbone(num_query_heads=2, num_key_value_heads=1, **TEXT),
    "llama_untied": lambda: _hub().LlamaBackbone(
        num_query_heads=2, num_key_value_heads=1, tie_word_embeddings=False, **TEXT
    ),
    "mistral": lambda: _hub().MistralBackbone(num_query_heads=2, num_key_value_heads=1, **TEXT),
    "gemma": lambda: _hub().GemmaBackbone(num_query_heads=2, num_key_value_heads=1, head_dim=4, **TEXT),
    "gpt2": _gpt2,
    "t5": lambda: _hub().T5Backbone(num_heads=2, **TEXT),
    "roberta": lambda: _hub().RobertaBackbone(num_heads=2, max_sequence_length=16, **TEXT),
    "deberta_v3": lambda: _hub().DebertaV3Backbone(num_heads=2, max_sequence_length=16, bucket_size=4, **TEXT),
    "whisper": lambda: _hub().WhisperBackbone(
        num_heads=2, num_mels=8, max_encoder_sequence_length=16, max_decoder_sequence_length=8, **TEXT
    ),
    "bart": lambda: _hub().BartBackbone(num_heads=2, max_sequence_length=16, **TEXT),
    "swin": lambda: _hub().SwinTransformerBackbone(
        image_shape=(16, 16, 3), embed_dim=8, depths=(1, 1), num_heads=(2, 2), window_size=2, patch_size=2
    ),
    "xlnet": lambda: _hub().XLNetBackbone(num_heads=2, **TEXT),
    "clip": _clip,
    "qwen": lambda: _hub().QwenBackbone(num_query_heads=2, num_key_value_heads=1, **TEXT),
    "gpt_neo_x": lambda: _hub().GPTNeoXBackbone(num_heads=2, max_sequence_length=16, **TEXT),
    "phi3": lambda: _hub().Phi3Backbone(num_query_heads=2, num_key_value_heads=1, **TEXT),
    "distil_bert": lambda: _hub().DistilBertBackbone(num_heads=2, max_sequence_length=16, **TEXT),
    "albert": lambda: _hub().AlbertBackbone(num_heads=2, embedding_dim=8, max_sequence_length=16, **TEXT),
    "opt": lambda: _hub().OPTBackbone(num_heads=2, max_sequence_length=16, **TEXT),
    "electra": lambda: _hub().ElectraBackbone(
        vocab_size=VOCAB,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        embedding_dim=8,
        intermediate_dim=16,
        max_sequence_length=16,
    ),
    "mixtral": lambda: _hub().MixtralBackbone(num_query_heads=2, num_key_value_heads=1, num_experts=2, top_k=1, **TEXT),
    # DINOv2: variables guarded by config flags (use_mask_token, num_register_tokens) and two MLP classes.
    "dinov2": lambda: _hub().DINOV2Backbone(
        patch_size=4,
        num_heads=2,
        image_shape=(16, 16, 3),
        position_embedding_shape=(16, 16, 3),
        num_layers=1,
        hidden_dim=8,
        intermediate_dim=16,
    ),
    # SigLIP: the attention-pooling probe is an unnamed add_weight (Keras names it ``variable``).
    "siglip_vision": lambda: _hub().SigLIPVisionEncoder(
        patch_size=8, num_heads=2, image_shape=(16, 16, 3), num_layers=1, hidden_dim=8, intermediate_dim=16
    ),
    "xception": lambda: _hub().XceptionBackbone(
        stackwise_conv_filters=[[4, 4]], stackwise_pooling=[False], image_shape=(16, 16, 3)
    ),
    "resnet": lambda: _hub().ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64],
        stackwise_num_blocks=[1],
        stackwise_num_strides=[1],
        block_type="basic_block",
        image_shape=(16, 16, 3),
    ),
}

TASKS: dict[str, Callable] = {
    "bert_text_classifier": lambda: _hub().BertTextClassifier(_bert(), num_classes=2, preprocessor=None),
    "gpt2_causal_lm": lambda: _hub().GPT2CausalLM(_gpt2(), preprocessor=None),
    "llama_causal_lm": lambda: _hub().LlamaCausalLM(
        _hub().LlamaBackbone(num_query_heads=2, num_key_value_heads=1, tie_word_embeddings=False, **TEXT),
        preprocessor=None,
    ),
    "vit_image_classifier": lambda: _hub().ViTImageClassifier(BACKBONES["vit"](), num_classes=3, preprocessor=None),
}

ALL = {**BACKBONES, **TASKS}


def build(name: str):
    return ALL[name]()
