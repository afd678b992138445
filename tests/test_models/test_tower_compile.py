# Copyright (c) mmcoop contributors. All rights reserved.
"""``compile`` of the frozen towers (``mmcoop/models/backbones/
tower_compile.py``): the options, what is compiled and when, and that a
compiled tower is the eager one everywhere else (state, copies, cache key,
tracing). The families' graphs: ``test_families.py``."""
import copy
import re

import pytest
import torch

from mmcoop.datasets.feature_cache.key import backbone_key
from mmcoop.models.backbones import FrozenCLIP, FrozenCLIPTextEncoder
from mmcoop.models.backbones.tower_compile import parse_compile
from mmcoop.models.prompt_learners import PromptLearner

NAMES = ['cat', 'traffic light', 'hair drier']
TEXT = 'mmcoop-tiny-RN'


class CountingBackend:
    """A ``torch.compile`` backend that counts the graphs it is given and
    runs them as traced (eager kernels)."""

    def __init__(self):
        self.graphs = 0
        self.shapes = []

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        self.shapes.append(
            [tuple(x.shape) for x in example_inputs if hasattr(x, 'shape')])
        return gm.forward


@pytest.fixture(scope='module')
def towers():
    return (FrozenCLIP(TEXT, input_resolution=64),
            FrozenCLIPTextEncoder(TEXT))


@pytest.mark.parametrize('value, expected', [
    (False, None), (None, None), (True, {}),
    (dict(mode='reduce-overhead'), dict(mode='reduce-overhead')),
    (dict(backend='aot_eager', fullgraph=True),
     dict(backend='aot_eager', fullgraph=True)),
])
def test_compile_values(value, expected):
    assert parse_compile('FrozenCLIP', value) == expected


@pytest.mark.parametrize('value, match', [
    ('yes', r"FrozenCLIP\w*\.compile must be a bool or a dict, got 'yes'"),
    (1, r'must be a bool or a dict, got 1 \(int\)'),
    (dict(modes='reduce-overhead'),
     r"keys torch.compile does not take: \['modes'\]"),
    (dict(mode='fast'), r"torch.compile refuses it: .*mode=fast"),
    (dict(backend='nonexistent'), r"torch.compile refuses it: .*nonexist"),
    (dict(mode='reduce-overhead', options=dict(max_autotune=True)),
     'torch.compile refuses it'),
    (dict(fullgraph='no'), 'fullgraph must be True or False'),
    # torch reads these only at a first call or a recompile: there a raw
    # TypeError of dynamo's cache check, or nothing (backend=1: not callable)
    (dict(backend='eager', recompile_limit='x'),
     r"recompile_limit must be an int >= 1 or None, got 'x'"),
    (dict(recompile_limit=-1), 'recompile_limit must be an int >= 1'),
    (dict(isolate_recompiles='x'), 'isolate_recompiles must be True or'),
    (dict(name=1), 'name must be a string or None, got 1'),
    (dict(backend=1), 'backend must be a backend name, a callable or None'),
])
def test_compile_refusals_name_the_field_and_the_fix(value, match):
    from mmcoop.models.backbones.tower_compile import _compile_params
    new = sorted(set(value) - set(_compile_params())) if isinstance(
        value, dict) else []
    if new:  # keys of a newer torch.compile (not in torch 2.6): refused
        match = (rf"compile has keys torch.compile does not take: "
                 rf"{re.escape(str(new))}")
    for build in (lambda: FrozenCLIP(TEXT, input_resolution=64,
                                     compile=value),
                  lambda: FrozenCLIPTextEncoder(TEXT, compile=value)):
        with pytest.raises(ValueError, match=match) as info:
            build()
        assert 'Fix: set' in str(info.value)
        assert len(str(info.value)) < 1200  # torch's option list cut short


@pytest.mark.parametrize('value, ignored', [
    (dict(backend='eager', mode='reduce-overhead'), "['mode']"),
    (dict(backend='cudagraphs', mode='max-autotune'), "['mode']"),
    (dict(backend='aot_eager', options={'x': 1}), "['options']"),
])
def test_inductor_settings_with_another_backend_are_refused(value, ignored):
    """Before: accepted, and torch only logged that the backend ignores
    them: no CUDA graphs, no autotuning, without a word."""
    with pytest.raises(ValueError, match=re.escape(
            f'FrozenCLIPTextEncoder.compile: {ignored} apply to the inductor '
            f"backend (the default) only; backend={value['backend']!r} "
            'ignores them')):
        FrozenCLIPTextEncoder(TEXT, compile=value)
    assert parse_compile('x', dict(backend='inductor',
                                   mode='reduce-overhead'))


def _text_step(enc, learner):
    out = enc(learner(enc.embed_tokens(learner.tokens)), learner.tokens)
    out.pow(2).sum().backward()
    grad, learner.ctx.grad = learner.ctx.grad, None
    return out.detach(), grad


def test_what_is_compiled_and_when(towers):
    """The text tower is compiled after the truncation (static shapes, the
    truncated length), the image tower's dense forward as one graph; an
    eager tower never reaches torch.compile, and neither does a compiled
    one under ``torch.jit.trace`` (the ONNX export), ``torch.export`` or
    inside an outer ``torch.compile`` (MMEngine's ``compile``)."""
    backbone, enc = towers
    learner = PromptLearner(NAMES, enc, n_ctx=2)
    counter = CountingBackend()
    x = torch.randn(1, 3, 64, 64)
    eager_text, eager_grad = _text_step(enc, learner)
    with torch.no_grad():
        eager_dense = backbone(x)[0]
    assert counter.graphs == 0
    backbone.compile_options = enc.compile_options = dict(
        backend=counter, fullgraph=True)
    try:
        text, grad = _text_step(enc, learner)
        assert counter.graphs == 1
        # the graph's input: the prompts cut to the truncated length
        length = int(enc.end_positions(learner.tokens).max()) + 1
        assert length < enc.context_length
        assert (3, length, enc.width) in counter.shapes[0]
        assert not any(len(s) == 3 and s[1] == enc.context_length
                       for s in counter.shapes[0])
        with torch.no_grad():
            dense = backbone(x)[0]
        assert counter.graphs == 2
        _text_step(enc, learner)  # the same shapes: no new graph
        assert counter.graphs == 2
        with torch.no_grad():
            traced = torch.jit.trace(backbone, x, check_trace=False)
            outer = torch.compile(backbone, backend='eager')(x)[0]
            exported = torch.export.export(backbone, (x, )).module()(x)[0]
        assert counter.graphs == 2
    finally:
        backbone.compile_options = enc.compile_options = None
    assert torch.equal(text, eager_text) and torch.equal(grad, eager_grad)
    assert torch.equal(dense, eager_dense)
    torch.testing.assert_close(traced(x)[0], eager_dense)
    torch.testing.assert_close(outer, eager_dense)
    torch.testing.assert_close(exported, eager_dense)


def test_a_compiled_tower_is_the_eager_one_to_state_copies_and_cache_key(
        towers):
    backbone, _ = towers
    compiled = FrozenCLIP(TEXT, input_resolution=64,
                          compile=dict(backend='aot_eager'))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        compiled(x)  # compiled functions exist now
    assert compiled.state_dict().keys() == backbone.state_dict().keys()
    assert repr(compiled) == repr(backbone)
    twin = copy.deepcopy(compiled)
    assert twin.compile_options == dict(backend='aot_eager')
    with torch.no_grad():
        torch.testing.assert_close(twin(x)[0], backbone(x)[0])
    eager_key, compiled_key = backbone_key(backbone), backbone_key(compiled)
    assert 'compile' not in eager_key  # caches made before it still match
    assert compiled_key.pop('compile') == '{"backend": "aot_eager"}'
    assert compiled_key == eager_key


def test_compiled_chunks_recomputed_in_backward_give_the_eager_gradient(
        towers):
    """``text_chunk_size`` (each chunk recomputed in backward by
    ``torch.utils.checkpoint``) around the compiled part: the eager
    chunked features and gradient."""
    _, enc = towers
    learner = PromptLearner(NAMES * 3, enc, n_ctx=2)
    enc.text_chunk_size = 4
    try:
        expected = _text_step(enc, learner)
        enc.compile_options = dict(backend='aot_eager', fullgraph=True)
        got = _text_step(enc, learner)
    finally:
        enc.text_chunk_size, enc.compile_options = None, None
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_compile_true_is_inductor_with_the_eager_numbers():
    """``compile=True``: inductor's own kernels (C++ on the CPU) for the
    text tower's forward and backward; same numbers to float rounding."""
    enc = FrozenCLIPTextEncoder('mmcoop-tiny-ViT', compile=True)
    assert enc.compile_options == {}
    learner = PromptLearner(NAMES, enc, n_ctx=2)
    got = _text_step(enc, learner)
    enc.compile_options = None
    expected = _text_step(enc, learner)
    for a, b in zip(got, expected):
        scale = b.abs().max()
        torch.testing.assert_close(a / scale, b / scale, rtol=0, atol=1e-5)


def test_compiled_text_tower_with_a_class_subset_per_step():
    """``class_subset``: each step encodes another subset of the prompts,
    K of them, truncated at the full pass's length (static shapes for the
    compiled graph); the losses and gradients stay the eager ones."""
    from mmpretrain.structures import DataSample

    from mmcoop.registry import MODELS
    names = ['cat', 'dog', 'traffic light', 'hair drier', 'potted plant',
             'a very long class name with many words']
    head = MODELS.build(dict(
        type='PositiveCoOpHead', classnames=names, n_ctx=2,
        class_subset=dict(num_classes=2),
        text_encoder=dict(type='FrozenCLIPTextEncoder', model_name=TEXT)))
    head.train()
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(2, head.text_encoder.embed_dim, 5, generator=g)
    target = torch.randint(0, 2, (2, len(names)), generator=g).float()
    samples = [DataSample().set_gt_score(t) for t in target]
    steps = []
    for options in (None, dict(backend='aot_eager')):
        head.text_encoder.compile_options = options
        torch.manual_seed(3)  # the same subsets both ways
        out = []
        for _ in range(4):
            loss = head.loss((dense, ), samples)['loss']
            loss.backward()
            out.append((loss.detach(), head.pos_prompt.ctx.grad.clone()))
            head.pos_prompt.ctx.grad = None
        steps.append(out)
    head.text_encoder.compile_options = None
    for (loss, grad), (c_loss, c_grad) in zip(*steps):
        torch.testing.assert_close(c_loss, loss, rtol=1e-6, atol=1e-6)
        # fp32 rounding of the compiled kernels' other orders
        assert float((c_grad - grad).norm() / grad.norm()) < 1e-5


def test_a_compiler_failure_names_the_field_and_the_fix(towers):
    """torch.compile's own failure (here a backend that cannot compile;
    e.g. no C++ compiler for inductor) names the tower's ``compile`` and
    the fix; an error of the model itself (which dynamo meets while
    tracing and wraps) comes through as in eager mode."""
    backbone, enc = towers

    def broken(gm, example_inputs):
        raise OSError('no working compiler')

    backbone.compile_options = dict(backend=broken)
    try:
        with pytest.raises(RuntimeError,
                           match=r'FrozenCLIP.compile=.*torch.compile failed '
                           r'.*no working compiler.*Fix: set the '
                           r"FrozenCLIP's compile=False") as info:
            with torch.no_grad():
                backbone(torch.randn(1, 3, 64, 64))
        assert isinstance(info.value.__cause__, Exception)
        tokens = enc.tokenize(['a dog'])
        wrong = torch.randn(1, tokens.shape[1], enc.width + 3)  # not W
        with pytest.raises(RuntimeError) as eager:
            enc(wrong, tokens)
        enc.compile_options = dict(backend='aot_eager')
        with pytest.raises(type(eager.value)) as compiled:
            enc(wrong, tokens)
        assert str(compiled.value) == str(eager.value)
        assert 'torch.compile' not in str(compiled.value)
    finally:
        backbone.compile_options = enc.compile_options = None
