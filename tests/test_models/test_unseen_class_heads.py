# Copyright (c) mmcoop contributors. All rights reserved.
"""Heads that can score a class they never trained on: the shared
(class-agnostic) feature-space embedding of PositiveCoOp / NegativeCoOp,
and what each head says about itself (``scores_unseen_classes``)."""
import pytest
import torch
from _head_configs import head_cfg
from _official_reference import TINY_RN, TINY_RN_512
from mmpretrain.structures import DataSample

from mmcoop.deployment.folded import fold_head
from mmcoop.engine.checkpoint_fit import check_checkpoint_fits
from mmcoop.registry import MODELS
from mmcoop.utils.checkpoint import CheckpointMismatchError

NAMES = ['cat', 'traffic light', 'hair_drier', 'dog']
SHARED = dict(class_specific=False, use_residual=False, shared_embedding=True)
EMBEDDED = {'PositiveCoOpHead': 'neg_embedding',
            'NegativeCoOpHead': 'pos_embedding'}


def _head(head_type, clip_file=None, model_name=TINY_RN, names=NAMES,
          **kwargs):
    torch.manual_seed(0)
    return MODELS.build(
        head_cfg(head_type, clip_file, model_name, names, **kwargs))


def _trainable(head):
    return {n: p for n, p in head.named_parameters() if p.requires_grad}


@pytest.mark.parametrize('head_type', list(EMBEDDED))
def test_shared_embedding_is_one_row_for_every_class(head_type, tiny_rn_file,
                                                     tiny_rn_clip, official):
    head = _head(head_type, tiny_rn_file, **SHARED)
    name = EMBEDDED[head_type]
    prompt = 'pos_prompt' if head_type == 'PositiveCoOpHead' else 'neg_prompt'
    # nothing belongs to one class: a (n_ctx, W) context and a (1, D) row
    assert {n: tuple(p.shape) for n, p in _trainable(head).items()} == {
        f'{prompt}.ctx': (4, 64), name: (1, 64)}
    neg, pos = head.class_features()
    embedded = neg if name == 'neg_embedding' else pos
    assert embedded.shape == (4, 64)
    for row in embedded:
        assert torch.equal(row, getattr(head, name)[0])
    # a class subset gets as many rows as it has classes
    neg2, pos2 = head.class_features(torch.tensor([3, 1]))
    assert neg2.shape == pos2.shape == (2, 64)
    torch.testing.assert_close(neg2, neg[[3, 1]])
    torch.testing.assert_close(pos2, pos[[3, 1]])
    # the logits are the official formula with the row repeated C times
    dense = torch.randn(2, 64, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        learner = getattr(head, prompt)
        text = official.text_encoder(
            tiny_rn_clip,
            official.prompt_embeddings(tiny_rn_clip, learner.ctx,
                                       learner.tokens), learner.tokens)
        row = getattr(head, name).expand(4, -1)
        expected = official.region_logits(dense, row, text) \
            if name == 'neg_embedding' else official.region_logits(
                dense, text, row)
        torch.testing.assert_close(
            head((dense, )), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('head_type', list(EMBEDDED))
@pytest.mark.parametrize('num_classes', [20, 80])
def test_shared_head_parameter_count_does_not_grow_with_classes(
        head_type, num_classes):
    """``n_ctx*W + D`` = 16 * 512 + 512 for any C (the docstring's
    figure)."""
    head = _head(head_type, None, TINY_RN_512,
                 [f'class{i}' for i in range(num_classes)], n_ctx=16,
                 **SHARED)
    assert sum(p.numel() for p in _trainable(head).values()) == 8_704


def _samples(target):
    return [DataSample().set_gt_score(t) for t in target]


@pytest.mark.parametrize('kwargs,changes', [
    (SHARED, True),
    (dict(class_specific=True, use_residual=True, shared_embedding=False),
     False),
])
def test_an_unseen_class_moves_only_through_shared_parameters(
        kwargs, changes, tiny_rn_file):
    """Class 2 is unknown (-1) in every image: one SGD step moves its
    features with the shared head, and leaves them exactly where they
    were with the per-class parameters of the paper's head."""
    head = _head('PositiveCoOpHead', tiny_rn_file, **kwargs).train()
    target = torch.tensor([[1., 0., -1., 0.], [0., 1., -1., 1.]])
    dense = torch.randn(2, 64, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = [f[2].clone() for f in head.class_features()]
    head.loss((dense, ), _samples(target))['loss'].backward()
    with torch.no_grad():
        for p in _trainable(head).values():
            p -= 0.5 * p.grad
        after = head.class_features()
    for old, new in zip(before, after):
        assert (not torch.equal(old, new[2])) == changes
    if not changes:  # the class-2 rows got an exactly zero gradient
        assert not head.pos_prompt.ctx.grad[2].any()
        assert not head.neg_embedding.grad[2].any()


@pytest.mark.parametrize('head_type,kwargs,expected', [
    ('ZeroShotHead', dict(), True),
    ('DualCoOpHead', dict(class_specific=False), True),
    ('DualCoOpHead', dict(), False),
    ('PositiveCoOpHead', SHARED, True),
    ('NegativeCoOpHead', SHARED, True),
    ('PositiveCoOpHead', dict(class_specific=False, use_residual=False),
     False),
    ('NegativeCoOpHead', dict(SHARED, use_residual=True), False),
    ('PositiveCoOpHead', dict(SHARED, class_specific=True), False),
    ('BaselineHead', dict(), False),
])
def test_scores_unseen_classes(head_type, kwargs, expected):
    head = _head(head_type, **kwargs)
    assert head.scores_unseen_classes is expected
    # the same answer from the config alone, without building
    cls = MODELS.get(head_type)
    assert (not cls.unseen_class_obstacles(kwargs)) is expected


def test_obstacles_name_the_field_and_the_fix():
    cls = MODELS.get('PositiveCoOpHead')
    obstacles = cls.unseen_class_obstacles({})  # the paper's defaults
    assert [o.split('`')[1] for o in obstacles] == [
        'model.head.class_specific=True', 'model.head.use_residual=True',
        'model.head.shared_embedding=False']
    assert ['Fix: `class_specific=False`' in obstacles[0],
            'Fix: `use_residual=False`' in obstacles[1],
            'Fix: `shared_embedding=True`' in obstacles[2]] == [True] * 3
    assert 'pos_embedding' in MODELS.get('NegativeCoOpHead') \
        .unseen_class_obstacles(dict(SHARED, shared_embedding=False))[0]


def test_fold_and_checkpoint_shapes(tiny_rn_file):
    shared = _head('PositiveCoOpHead', tiny_rn_file, **SHARED).eval()
    # export folds the broadcast row into (K, D) buffers
    folded = fold_head(shared, [3, 0])
    neg, pos = shared.class_features()
    assert folded.neg_feats.shape == (2, 64)
    torch.testing.assert_close(folded.neg_feats, neg[[3, 0]])
    torch.testing.assert_close(folded.pos_feats, pos[[3, 0]])
    # a (1, D) checkpoint does not silently load into a (C, D) head
    per_class = _head('PositiveCoOpHead', tiny_rn_file, class_specific=False,
                      use_residual=False)
    with pytest.raises(CheckpointMismatchError,
                       match=r'neg_embedding: checkpoint \[1, 64\] vs model '
                       r'\[4, 64\]'):
        check_checkpoint_fits(per_class,
                              dict(state_dict=shared.state_dict()),
                              'shared.pth', dict(classes=False))
