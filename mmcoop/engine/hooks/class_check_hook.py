# Copyright (c) mmcoop contributors. All rights reserved.
"""Check, before a loop starts, that the datasets' classes fit the head."""
import re
from typing import List, Optional

from mmengine.hooks import Hook

from mmcoop.registry import HOOKS


def _norm(name) -> str:
    return re.sub(r'\s+', ' ', str(name).replace('_', ' ')).strip().lower()


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
    * other names (e.g. a custom prompt wording in the head) only log a
      warning listing the first differences.

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
        a = [_norm(c) for c in classes]
        b = [_norm(c) for c in head]
        if a == b:
            return
        diffs = [
            f'#{i}: {x!r} vs {y!r}'
            for i, (x, y) in enumerate(zip(classes, head))
            if _norm(x) != _norm(y)
        ]
        if sorted(a) == sorted(b):
            raise ValueError(
                f'The classes of {where} and `model.head.classnames` hold the '
                f'same names in '
                f'another order ({", ".join(diffs[:6])}); every class would '
                f'be trained and scored against another class\'s prompt. '
                f'{fix}')
        runner.logger.warning(
            f'The classes of {where} and `model.head.classnames` differ ('
            f'{", ".join(diffs[:6])}{", ..." if len(diffs) > 6 else ""}); '
            'the head\'s names are used in the prompts, the dataset\'s '
            'order for the targets.')

    def before_train(self, runner) -> None:
        self._check(runner, 'train', runner.train_dataloader)
        val_loop = getattr(runner, '_val_loop', None)
        loader = getattr(val_loop, 'dataloader', None)
        if loader is not None:
            self._check(runner, 'val', loader)

    def before_val(self, runner) -> None:
        if getattr(runner, '_train_loop', None) is None or isinstance(
                runner._train_loop, dict):
            self._check(runner, 'val', runner.val_dataloader)

    def before_test(self, runner) -> None:
        self._check(runner, 'test', runner.test_dataloader)
