# Copyright (c) mmcoop contributors. All rights reserved.
"""Check, before a loop starts, that the datasets' classes fit the head."""
from typing import List, Optional

from mmengine.hooks import Hook

from mmcoop.datasets.utils import (describe_class_difference,
                                   describe_mismatch, normalize_class_name)
from mmcoop.registry import HOOKS


def _head_classes(runner) -> Optional[List[str]]:
    model = runner.model.module if hasattr(runner.model,
                                           'module') else runner.model
    head = getattr(model, 'head', None)
    names = getattr(head, 'classnames', None)
    return list(names) if names is not None else None


@HOOKS.register_module()
class ClassCheckHook(Hook):
    """Fail fast when a dataset's class list does not fit the model head.

    The head's prompts are built from ``model.head.classnames``; the targets
    come from the dataset's ``metainfo['classes']`` in the same order. Before
    training (training and validation sets), validation and testing:

    * a different number of classes raises ``ValueError`` naming both
      fields (otherwise the loss or the metric fails later with a shape
      error, or worse);
    * the same names in another order raise ``ValueError`` (every class
      would be trained against another class's prompt);
    * other names raise ``ValueError`` listing the names only on either
      side (the prompts would say something else than the targets mean,
      e.g. class names whose spaces were lost on the command line).
      Case, ``_`` and spacing are ignored
      (:func:`mmcoop.datasets.utils.normalize_class_name`). For your own
      prompt wording, give the dataset the same ``classes=[...]``.

    :class:`~mmcoop.engine.MMCoopRunner` registers it automatically (opt out
    with ``mmcoop_hooks = dict(class_check=False)``).
    """

    priority = 'VERY_HIGH'

    def _check(self, runner, role: str, loader) -> None:
        head = _head_classes(runner)
        dataset = getattr(loader, 'dataset', None)
        if head is None or dataset is None:
            return
        classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
        if not classes:
            return
        classes = list(classes)
        where = f'`{role}_dataloader.dataset` ({type(dataset).__name__})'
        fix = ('Fix: give the head the dataset\'s class list (`model.head.'
               'classnames=[...]` in the same order, or the dataset type '
               "name such as 'COCO2014MultiLabel'), or pass the matching "
               '`classes=[...]` to the dataset.')
        if len(classes) != len(head):
            raise ValueError(
                f'{where} has {len(classes)} classes but `model.head.'
                f'classnames` has {len(head)}: dataset {classes[:12]}'
                f'{"..." if len(classes) > 12 else ""} vs head {head[:12]}'
                f'{"..." if len(head) > 12 else ""}. {fix}')
        a = [normalize_class_name(c) for c in classes]
        b = [normalize_class_name(c) for c in head]
        if a == b:
            return
        if sorted(a) == sorted(b):
            raise ValueError(
                f'The classes of {where} and `model.head.classnames` hold the '
                f'same names in another order '
                f'({describe_mismatch(classes, head, 6)}); every class would '
                f'be trained and scored against another class\'s prompt. '
                f'{fix}')
        squeezed = ''
        if [x.replace(' ', '') for x in a] == [y.replace(' ', '') for y in b]:
            squeezed = (
                ' The names differ only in spaces: MMEngine\'s `--cfg-options`'
                ' deletes spaces inside values; mmcoop\'s tools/train.py and '
                'tools/test.py keep them (quote the list), or give the '
                "dataset type name, e.g. model.head.classnames="
                "'COCO2014MultiLabel'.")
        raise ValueError(
            f'The classes of {where} and `model.head.classnames` differ: ' +
            describe_class_difference(classes, head,
                                      ('the dataset', 'the head')) +
            '; the head\'s names become the prompts, the dataset\'s names '
            f'define the targets.{squeezed} {fix}')

    def before_train(self, runner) -> None:
        self._check(runner, 'train', runner.train_dataloader)
        # built by Runner.train() before this hook runs (or None)
        loader = getattr(runner.val_loop, 'dataloader', None)
        if loader is not None:
            self._check(runner, 'val', loader)
        self._val_checked = True

    def before_val(self, runner) -> None:
        # once: before_train checked it in a training run; runner.val()
        # alone checks it here
        if not getattr(self, '_val_checked', False):
            self._check(runner, 'val', runner.val_dataloader)
            self._val_checked = True

    def before_test(self, runner) -> None:
        self._check(runner, 'test', runner.test_dataloader)
