# Copyright (c) mmcoop contributors. All rights reserved.
"""tools/model_converters/official_to_mmcoop.py on checkpoints built here in
the official key layout (train.py L174-181: ``{'epoch', 'arch',
'state_dict', 'best_mAP', 'optimizer', 'scheduler'}``)."""
import os
import os.path as osp
from collections import OrderedDict

import numpy as np
import pytest
import torch
from _common import load_tool
from _official_reference import TINY_RN
from mmengine.runner import load_checkpoint

from mmcoop.engine.runner import MMCoopRunner
from mmcoop.registry import MODELS

conv = load_tool('tools/model_converters/official_to_mmcoop.py')

NAMES = ['cat', 'traffic light', 'dining table']
C, N_CTX, W = 3, 4, 64
HEAD_TYPES = dict(
    positivecoop='PositiveCoOpHead',
    negativecoop='NegativeCoOpHead',
    dualcoop='DualCoOpHead',
    baseline='BaselineHead')
MMCOOP_KEYS = {
    'positivecoop':
    {'head.pos_prompt.ctx', 'head.neg_embedding', 'head.pos_residual'},
    'negativecoop':
    {'head.neg_prompt.ctx', 'head.pos_embedding', 'head.neg_residual'},
    'dualcoop': {'head.pos_prompt.ctx', 'head.neg_prompt.ctx'},
    'baseline': {'head.fc.weight', 'head.fc.bias'},
}


def official_state_dict(method, official, csc=True, n_ctx=N_CTX, seed=0):
    """``model.state_dict()`` of the official model, learned tensors random,
    frozen CLIP represented by a few entries under its three names."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    sd['image_encoder.conv1.weight'] = torch.randn(4, 3, 3, 3, generator=g)
    sd['image_encoder.attnpool.positional_embedding'] = torch.randn(5, 256)
    sd['text_encoder.positional_embedding'] = torch.randn(77, W)
    sd['text_encoder.transformer.resblocks.0.attn.in_proj_weight'] = \
        torch.randn(3 * W, W)
    if method != 'dualcoop' and method != 'baseline':
        sd['clip_model.token_embedding.weight'] = torch.randn(10, W)
        sd['clip_model.visual.conv1.weight'] = torch.randn(4, 3, 3, 3)
    ctx_shape = (C, n_ctx, W) if csc else (n_ctx, W)
    tokens = official.tokens(NAMES, n_ctx)
    sides = dict(
        positivecoop=['pos'],
        negativecoop=['neg'],
        dualcoop=['pos', 'neg'],
        baseline=['pos', 'neg'])[method]
    for side in sides:
        sd[f'prompt_learner.ctx_{side}'] = 0.02 * torch.randn(
            *ctx_shape, generator=g)
        sd[f'prompt_learner.token_prefix_{side}'] = torch.randn(C, 1, W)
        sd[f'prompt_learner.token_suffix_{side}'] = torch.randn(
            C, 76 - n_ctx, W)
    sd['prompt_learner.tokenized_prompts'] = tokens if len(sides) == 1 \
        else torch.cat([tokens, tokens])
    if method == 'positivecoop':
        sd['txt_prompt_neg'] = torch.randn(C, W, generator=g)
        sd['txt_prompt_learn'] = torch.randn(C, W, generator=g)
    elif method == 'negativecoop':
        sd['txt_prompt_pos'] = torch.randn(C, W, generator=g)
        sd['txt_prompt_learn'] = torch.randn(C, W, generator=g)
    elif method == 'baseline':
        sd['linear_layer.weight'] = torch.randn(2 * C, W, generator=g) / 8
        sd['linear_layer.bias'] = torch.randn(2 * C, generator=g) / 8
    return sd


def official_checkpoint(state_dict):
    """As train.py saves it: a numpy best_mAP and the Dassl scheduler state,
    whose ``successor`` is a pickled CosineAnnealingLR holding the SGD."""
    learned = [
        v.clone().requires_grad_(True) for k, v in state_dict.items()
        if k.startswith(('prompt_learner.ctx', 'txt_prompt', 'linear_layer'))
    ]
    optim = torch.optim.SGD(learned, lr=0.002, momentum=0.9)
    for p in learned:
        p.grad = torch.ones_like(p)
    optim.step()
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 50.)
    scheduler = dict(
        successor=cosine,
        warmup_epoch=1,
        cons_lr=1e-5,
        base_lrs=[0.002],
        last_epoch=3,
        _step_count=4,
        _last_lr=[0.0019])
    return {
        'epoch': 4,
        'arch': 'coco-PositiveCoop-RN101-positivecoop-cosine-bs32-e50',
        'state_dict': state_dict,
        'best_mAP': np.float64(70.5),
        'optimizer': optim.state_dict(),
        'scheduler': scheduler,
    }


def _save(obj, tmp_path, name='checkpoint.pth.tar'):
    path = str(tmp_path / name)
    torch.save(obj, path)
    return path


def _classifier(method, clip_file):
    head = dict(type=HEAD_TYPES[method], classnames=NAMES)
    if method == 'baseline':
        head['in_channels'] = W
    else:
        head.update(
            n_ctx=N_CTX,
            text_encoder=dict(
                type='FrozenCLIPTextEncoder',
                model_name=TINY_RN,
                pretrained=clip_file))
    return dict(
        type='ImageClassifier',
        backbone=dict(
            type='FrozenCLIP',
            model_name=TINY_RN,
            pretrained=clip_file,
            input_resolution=64),
        head=head)


def _official_probs(method, sd, dense, clip, official):
    """p(present) of the official model with these parameters, by hand."""
    tokens = sd['prompt_learner.tokenized_prompts'][:C]

    def text(side):
        ctx = sd[f'prompt_learner.ctx_{side}']
        return official.text_encoder(
            clip, official.prompt_embeddings(clip, ctx, tokens), tokens)

    with torch.no_grad():
        if method == 'positivecoop':
            logits = official.region_logits(
                dense, sd['txt_prompt_neg'],
                text('pos') + sd['txt_prompt_learn'])
        elif method == 'negativecoop':
            logits = official.region_logits(
                dense,
                text('neg') + sd['txt_prompt_learn'], sd['txt_prompt_pos'])
        elif method == 'dualcoop':
            logits = official.region_logits(dense, text('neg'), text('pos'))
        else:
            logits = official.baseline_logits(dense, sd['linear_layer.weight'],
                                              sd['linear_layer.bias'])
    return logits.softmax(dim=1)[:, 1]


# --------------------------------------------------------------------------
@pytest.mark.parametrize('method', list(HEAD_TYPES))
def test_convert_and_predict_like_the_official_model(method, tmp_path,
                                                     tiny_rn_file,
                                                     tiny_rn_clip, official):
    sd = official_state_dict(method, official)
    src = _save(official_checkpoint(sd), tmp_path)
    dst = str(tmp_path / 'mmcoop.pth')
    meta = conv.convert_checkpoint(src, dst, method, num_classes=C)

    out = torch.load(dst, weights_only=True)  # plain tensors and numbers
    assert set(out) == {'state_dict', 'meta'}
    assert set(out['state_dict']) == MMCOOP_KEYS[method]
    for official_key, key in conv.KEY_MAP[method].items():
        assert torch.equal(out['state_dict'][key], sd[official_key])
    assert out['meta'] == meta
    assert meta['converted_from'] == f'official {method}'
    assert meta['num_classes'] == C and meta['source_epoch'] == 4
    assert meta['classnames'] == NAMES
    assert 'mmcoop_version' in meta
    # the pickled objects outside the state dict were never instantiated
    assert 'torch.optim.sgd.SGD' in meta['unread_source_objects']

    torch.manual_seed(123)  # a different head init than the checkpoint's
    model = MODELS.build(_classifier(method, tiny_rn_file)).eval()
    load_checkpoint(model, dst, map_location='cpu', strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (dense, ) = model.backbone(x)
        probs = torch.stack([s.pred_score for s in model(x, mode='predict')])
    expected = _official_probs(method, sd, dense, tiny_rn_clip, official)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-5)


def test_load_with_mmcoop_runner(tmp_path, tiny_rn_file, official):
    sd = official_state_dict('dualcoop', official)
    src = _save(official_checkpoint(sd), tmp_path)
    dst = str(tmp_path / 'dual.pth')
    conv.convert_checkpoint(src, dst, 'dualcoop')
    runner = MMCoopRunner(
        model=_classifier('dualcoop', tiny_rn_file),
        work_dir=str(tmp_path / 'work'),
        default_scope='mmcoop')
    runner.load_checkpoint(dst)  # weights_only=True path
    torch.testing.assert_close(runner.model.head.pos_prompt.ctx,
                               sd['prompt_learner.ctx_pos'])
    torch.testing.assert_close(runner.model.head.neg_prompt.ctx,
                               sd['prompt_learner.ctx_neg'])


def test_data_parallel_prefix_and_plain_state_dict(tmp_path, official):
    sd = official_state_dict('positivecoop', official)
    wrapped = {'state_dict': {f'module.{k}': v for k, v in sd.items()}}
    for i, obj in enumerate((wrapped, sd)):
        src = _save(obj, tmp_path, f'src{i}.pth')
        dst = str(tmp_path / f'dst{i}.pth')
        meta = conv.convert_checkpoint(src, dst, 'positivecoop')
        assert meta['num_classes'] == C
        assert 'unread_source_objects' not in meta  # nothing to stub
        out = torch.load(dst, weights_only=True)['state_dict']
        assert torch.equal(out['head.neg_embedding'], sd['txt_prompt_neg'])


def test_shared_context_class_count_from_buffers(tmp_path, official):
    sd = official_state_dict('dualcoop', official, csc=False)
    src = _save(sd, tmp_path)
    meta = conv.convert_checkpoint(src, str(tmp_path / 'o.pth'), 'dualcoop')
    assert meta['class_specific'] is False and meta['n_ctx'] == N_CTX
    assert meta['num_classes'] == C  # from token_prefix_* (C, 1, W)
    with pytest.raises(conv.ConversionError, match='--num-classes 5'):
        conv.convert_checkpoint(
            src, str(tmp_path / 'o.pth'), 'dualcoop', num_classes=5)


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
def test_wrong_method_names_keys_and_suggests(tmp_path, official):
    src = _save(official_state_dict('dualcoop', official), tmp_path)
    with pytest.raises(conv.ConversionError) as info:
        conv.convert_checkpoint(src, str(tmp_path / 'o.pth'), 'positivecoop')
    msg = str(info.value)
    assert "'prompt_learner.ctx_neg'" in msg  # unexpected
    assert "'txt_prompt_neg'" in msg and "'txt_prompt_learn'" in msg
    assert '--method dualcoop' in msg


def test_positivecoop_repos_dualcoop_is_the_baseline(tmp_path, official):
    """PositiveCoOp's models/dualcoop.py is a renamed Baseline."""
    src = _save(official_state_dict('baseline', official), tmp_path)
    with pytest.raises(
            conv.ConversionError, match='renamed copy of the Baseline'):
        conv.convert_checkpoint(src, str(tmp_path / 'o.pth'), 'dualcoop')
    meta = conv.convert_checkpoint(src, str(tmp_path / 'o.pth'), 'baseline')
    assert meta['in_channels'] == W and meta['classnames'] == NAMES


def test_unknown_and_missing_keys(tmp_path, official):
    sd = official_state_dict('positivecoop', official)
    sd['extra_head.weight'] = torch.zeros(2)
    del sd['txt_prompt_learn']
    src = _save(sd, tmp_path)
    with pytest.raises(conv.ConversionError) as info:
        conv.convert_checkpoint(src, str(tmp_path / 'o.pth'), 'positivecoop')
    assert "unexpected learned keys ['extra_head.weight']" in str(info.value)
    assert "missing keys ['txt_prompt_learn']" in str(info.value)


def test_num_classes_mismatch(tmp_path, official):
    src = _save(official_state_dict('negativecoop', official), tmp_path)
    with pytest.raises(
            conv.ConversionError,
            match='--num-classes 80 does not match.*3 classes'):
        conv.convert_checkpoint(
            src, str(tmp_path / 'o.pth'), 'negativecoop', num_classes=80)


def test_inconsistent_shapes(tmp_path, official):
    sd = official_state_dict('positivecoop', official)
    sd['txt_prompt_neg'] = torch.zeros(C + 1, W)
    with pytest.raises(conv.ConversionError, match='Inconsistent class'):
        conv.convert_checkpoint(
            _save(sd, tmp_path), str(tmp_path / 'o'), 'positivecoop')
    sd = official_state_dict('dualcoop', official)
    sd['prompt_learner.ctx_neg'] = torch.zeros(C, N_CTX + 2, W)
    with pytest.raises(conv.ConversionError, match='one n_ctx'):
        conv.convert_checkpoint(
            _save(sd, tmp_path), str(tmp_path / 'o'), 'dualcoop')
    sd = official_state_dict('baseline', official)
    sd['linear_layer.bias'] = torch.zeros(2 * C + 1)
    with pytest.raises(conv.ConversionError, match='linear_layer'):
        conv.convert_checkpoint(
            _save(sd, tmp_path), str(tmp_path / 'o'), 'baseline')


def test_code_in_the_pickle_needs_trust_source(tmp_path, official):
    """A global from a blocked module (``os.system``) cannot be replaced by
    a placeholder: refused unless --trust-source."""
    ckpt = official_checkpoint(official_state_dict('dualcoop', official))
    ckpt['hook'] = os.system  # pickled by reference, never called here
    src = _save(ckpt, tmp_path)
    dst = str(tmp_path / 'o.pth')
    with pytest.raises(conv.ConversionError, match='--trust-source'):
        conv.convert_checkpoint(src, dst, 'dualcoop')
    assert not osp.exists(dst)
    with pytest.warns(UserWarning, match='weights_only=False'):
        meta = conv.convert_checkpoint(src, dst, 'dualcoop', trust_source=True)
    assert meta['num_classes'] == C
    assert set(torch.load(dst, weights_only=True)['state_dict']) == \
        MMCOOP_KEYS['dualcoop']


def test_unreadable_sources(tmp_path):
    with pytest.raises(conv.ConversionError, match='does not exist'):
        conv.convert_checkpoint(
            str(tmp_path / 'nope'), str(tmp_path / 'o'), 'dualcoop')
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(conv.ConversionError, match='empty'):
        conv.convert_checkpoint(str(empty), str(tmp_path / 'o'), 'dualcoop')
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(
            conv.ConversionError, match='not a PyTorch checkpoint') as info:
        conv.convert_checkpoint(str(garbage), str(tmp_path / 'o'), 'dualcoop')
    assert '--trust-source' not in str(info.value)
    bad = _save({'state_dict': {'a': 1}}, tmp_path, 'bad.pth')
    with pytest.raises(conv.ConversionError, match='non-tensor'):
        conv.convert_checkpoint(bad, str(tmp_path / 'o'), 'dualcoop')


def test_cli(tmp_path, official, capsys):
    src = _save(
        official_checkpoint(official_state_dict('baseline', official)),
        tmp_path)
    dst = str(tmp_path / 'out.pth')
    assert conv.main([src, dst, '--method', 'baseline', '--num-classes',
                      '3']) == 0
    out = capsys.readouterr().out
    assert 'wrote' in out and 'class order' in out
    assert conv.main([src, dst, '--method', 'dualcoop', '--force']) == 1
    assert 'error:' in capsys.readouterr().err
    # the output policy: no silent overwrite, never the input
    before = open(dst, 'rb').read()
    assert conv.main([src, dst, '--method', 'baseline']) == 1
    assert 'already exist' in capsys.readouterr().err
    assert conv.main([src, src, '--method', 'baseline', '--force']) == 1
    assert 'is the input' in capsys.readouterr().err
    assert open(dst, 'rb').read() == before
    with pytest.raises(SystemExit):
        conv.main([src, dst, '--method', 'coop'])
