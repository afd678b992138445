# Copyright (c) mmcoop contributors. All rights reserved.
"""Hand-written prompt templates, their negations and class-name lists.

Used by the analysis tools (``tools/analysis/prompt_similarity.py``,
``tools/visualization/similarity_map.py``); nothing here enters training.

Templates are ``str.format`` patterns with one ``{}`` slot for the class name
(``'a photo of a {}.'``).

Template bank
-------------
:data:`DEFAULT_TEMPLATE_BANK` has 85 templates, matching the size of the
bank in the PositiveCoOp paper ("80 cls - 85 prompt"), whose list is not
published:

* the 80 CLIP ImageNet templates (:data:`OPENAI_IMAGENET_TEMPLATES`, the
  list of OpenAI's ``Prompt_Engineering_for_ImageNet.ipynb``, identical to
  ``open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES``);
* 5 "picture / image" templates chosen by mmcoop
  (:data:`EXTRA_TEMPLATES`), so that the paper's P2 (``'a picture of a
  {}'``) is in the bank.

Negation rule
-------------
:func:`negate_template` turns a positive template into a negative one. The
rule is either a preset name or a custom pattern in which ``{neg}`` is
replaced by the negation word(s) and ``{prompt}`` by the positive template
(plain text substitution, the class slot ``{}`` is left alone):

* ``'prefix'`` (default, the paper's N1): ``'{neg} {prompt}'``:
  ``'a photo of a {}.'`` -> ``'not a photo of a {}.'``;
* ``'article'``: the determiner of the class noun phrase (the last ``a``,
  ``an``, ``the``, ``my``, ``one`` or ``many`` among the 5 words before the
  class slot) is replaced by the negation word, which is inserted before
  the slot if there is none: with ``negation='no'``,
  ``'a photo of a {}.'`` -> ``'a photo of no {}.'``,
  ``'the plushie {}.'`` -> ``'no plushie {}.'``;
* any other string containing ``{neg}`` and ``{prompt}``, e.g.
  ``'{prompt} {neg}'`` or ``'there is {neg} {prompt}'``.

CLIP's tokenizer lower-cases its input, so capitalisation ("Not a photo")
does not matter.
"""
import os.path as osp
import re
from typing import List, Optional, Sequence

#: The 80 CLIP ImageNet prompt templates (OpenAI's prompt-engineering
#: notebook; same order as ``open_clip.zero_shot_metadata``).
OPENAI_IMAGENET_TEMPLATES = (
    'a bad photo of a {}.', 'a photo of many {}.', 'a sculpture of a {}.',
    'a photo of the hard to see {}.', 'a low resolution photo of the {}.',
    'a rendering of a {}.', 'graffiti of a {}.', 'a bad photo of the {}.',
    'a cropped photo of the {}.', 'a tattoo of a {}.', 'the embroidered {}.',
    'a photo of a hard to see {}.', 'a bright photo of a {}.',
    'a photo of a clean {}.', 'a photo of a dirty {}.',
    'a dark photo of the {}.', 'a drawing of a {}.', 'a photo of my {}.',
    'the plastic {}.', 'a photo of the cool {}.', 'a close-up photo of a {}.',
    'a black and white photo of the {}.', 'a painting of the {}.',
    'a painting of a {}.', 'a pixelated photo of the {}.',
    'a sculpture of the {}.', 'a bright photo of the {}.',
    'a cropped photo of a {}.', 'a plastic {}.', 'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.', 'a blurry photo of the {}.',
    'a photo of the {}.', 'a good photo of the {}.', 'a rendering of the {}.',
    'a {} in a video game.', 'a photo of one {}.', 'a doodle of a {}.',
    'a close-up photo of the {}.', 'a photo of a {}.', 'the origami {}.',
    'the {} in a video game.', 'a sketch of a {}.', 'a doodle of the {}.',
    'a origami {}.', 'a low resolution photo of a {}.', 'the toy {}.',
    'a rendition of the {}.', 'a photo of the clean {}.',
    'a photo of a large {}.', 'a rendition of a {}.', 'a photo of a nice {}.',
    'a photo of a weird {}.', 'a blurry photo of a {}.', 'a cartoon {}.',
    'art of a {}.', 'a sketch of the {}.', 'a embroidered {}.',
    'a pixelated photo of a {}.', 'itap of the {}.',
    'a jpeg corrupted photo of the {}.', 'a good photo of a {}.',
    'a plushie {}.', 'a photo of the nice {}.', 'a photo of the small {}.',
    'a photo of the weird {}.', 'the cartoon {}.', 'art of the {}.',
    'a drawing of the {}.', 'a photo of the large {}.',
    'a black and white photo of a {}.', 'the plushie {}.',
    'a dark photo of a {}.', 'itap of a {}.', 'graffiti of the {}.',
    'a toy {}.', 'itap of my {}.', 'a photo of a cool {}.',
    'a photo of a small {}.', 'a tattoo of the {}.')

#: mmcoop's 5 additions that bring the bank to the paper's 85 templates.
EXTRA_TEMPLATES = ('a picture of a {}.', 'a picture of the {}.',
                   'an image of a {}.', 'an image of the {}.',
                   'a photograph of a {}.')

#: The default 85-template bank (80 CLIP ImageNet + 5 extra).
DEFAULT_TEMPLATE_BANK = OPENAI_IMAGENET_TEMPLATES + EXTRA_TEMPLATES

#: The paper's single prompt pair (quoted without a final period).
PAPER_P1 = 'a photo of a {}'
PAPER_N1 = 'not a photo of a {}'
PAPER_P2 = 'a picture of a {}'

NEGATION_RULES = {
    'prefix': '{neg} {prompt}',
    'article': None,  # handled in code, see negate_template
}

_DETERMINERS = ('a', 'an', 'the', 'my', 'one', 'many')


def check_template(template: str) -> str:
    """Raise if ``template`` does not have exactly one ``{}`` slot."""
    if not isinstance(template, str) or template.count(
            '{}') != 1 or template.replace('{}', '').count('{'):
        raise ValueError(
            f'Prompt template {template!r} must be a string with exactly '
            'one `{}` slot for the class name and no other braces (or '
            "'bank' for the template bank).")
    return template


def check_templates(field: str, templates: Sequence[str]) -> List[str]:
    """``templates`` as a list, each checked (:func:`check_template`);
    an empty list, a value that is not a list or tuple, or a bad template
    is refused naming ``field`` (and the template's index)."""
    if not isinstance(templates, (list, tuple)):
        raise ValueError(
            f'`{field}` must be a list of templates such as '
            f"['a photo of a {{}}.'], got {templates!r}.")
    if not templates:
        raise ValueError(
            f'`{field}` is empty: give at least one template, e.g. '
            "'a photo of a {}.'.")
    checked = []
    for i, template in enumerate(templates):
        try:
            checked.append(check_template(template))
        except ValueError as e:
            raise ValueError(f'`{field}[{i}]`: {e}') from None
    return checked


def negate_template(template: str,
                    negation: str = 'not',
                    rule: str = 'prefix') -> str:
    """The negative version of a positive template.

    Args:
        template (str): positive template with one ``{}`` slot.
        negation (str): negation word(s), e.g. ``'not'`` or ``'no'``.
        rule (str): ``'prefix'``, ``'article'`` or a custom pattern with
            ``{neg}`` and ``{prompt}`` (see the module docstring).

    Returns:
        str: the negated template, still with one ``{}`` slot.
    """
    check_template(template)
    if not isinstance(negation, str) or not negation.strip():
        raise ValueError(
            f'The negation word is empty ({negation!r}): the negative '
            "template would be the positive one. Fix: give e.g. 'not' or "
            "'no'.")
    negation = negation.strip()
    if rule == 'article':
        head, tail = template.split('{}')
        words = head.split(' ')  # head ends with '' when a space precedes {}
        # the determiner of the class noun phrase: the last one among the
        # (up to 4) words before the slot
        for i in range(len(words) - 1, max(-1, len(words) - 6), -1):
            if words[i].lower() in _DETERMINERS:
                words[i] = negation
                return check_template(' '.join(words) + '{}' + tail)
        if head and not head.endswith(' '):
            head += ' '
        return check_template(f'{head}{negation} {{}}{tail}')
    pattern = NEGATION_RULES.get(rule, rule)
    if '{prompt}' not in pattern or '{neg}' not in pattern:
        raise ValueError(
            f'Unknown negation rule {rule!r}: use one of '
            f'{sorted(NEGATION_RULES)} or a pattern containing `{{prompt}}` '
            'and `{neg}`, e.g. "{neg} {prompt}".')
    out = pattern.replace('{neg}', negation).replace('{prompt}', template)
    out = re.sub(r'\s+', ' ', out).strip()
    return check_template(out)


def _read_lines(path: str, option: str, what: str) -> List[str]:
    """The non-blank lines of a text file that do not start with ``#``, as
    ``(line number, text)``; a missing, folder or non-UTF-8 file is refused
    naming ``option``, the path and the fix."""
    fix = f'Fix: give a text file with one {what} per line'
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f'{option} is empty. {fix}.')
    if osp.isdir(path):
        raise IsADirectoryError(f'{option} {path!r} is a folder. {fix}.')
    if not osp.exists(path):
        raise FileNotFoundError(
            f'{option} {path!r} does not exist. Fix: check the path, or '
            f'give a text file with one {what} per line.')
    lines = []
    try:
        with open(path, encoding='utf-8') as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if line and not line.startswith('#'):
                    lines.append((number, line))
    except UnicodeDecodeError as e:
        raise ValueError(
            f'{option} {path!r} is not UTF-8 text ({e}). {fix} (UTF-8).') \
            from None
    except OSError as e:
        raise OSError(f'{option} {path!r} cannot be read '
                      f'({e.strerror or e}). {fix}.') from None
    if not lines:
        raise ValueError(f'{option} {path!r} has no {what} (only blank or '
                         f'"#" lines). {fix}.')
    return lines


def load_templates(path: str, option: str = 'templates') -> List[str]:
    """Read templates from a text file, one per line.

    Blank lines and lines starting with ``#`` are skipped. Each template must
    have one ``{}`` slot.

    Args:
        path (str): the text file.
        option (str): what gives the path (e.g. ``'--templates'``), for the
            errors.

    Raises:
        FileNotFoundError / IsADirectoryError / ValueError: the file is
            missing, a folder, not UTF-8, has no template, a line without
            exactly one ``{}`` slot or a repeated line; the message names
            ``option``, the path (and line) and the fix.
    """
    templates, seen = [], {}
    for number, line in _read_lines(path, option, 'template with a {} slot'):
        try:
            templates.append(check_template(line))
        except ValueError as e:
            raise ValueError(f'{option} {path!r}, line {number}: {e}') \
                from None
        if line in seen:  # it would weigh twice, and pair with itself
            raise ValueError(
                f'{option} {path!r}, line {number} repeats line '
                f'{seen[line]} ({line!r}). Fix: keep each template once.')
        seen[line] = number
    return templates


def fill(template: str, classname: str) -> str:
    """``template.format(classname)`` with ``_`` read as a space."""
    return template.replace('{}', classname.replace('_', ' '))


def get_classnames(name_or_path: Optional[str] = 'coco',
                   option: str = 'classes') -> List[str]:
    """Class names by dataset key or from a file.

    Args:
        name_or_path (str, optional): ``'coco'`` (the 80 COCO-2014 names as
            the official code spells them), ``'voc'`` (20 VOC-2007 names), a
            text file with one class name per line (blank lines and lines
            starting with ``#`` are skipped), or None for ``'coco'``.
        option (str): what gives ``name_or_path`` (e.g. ``'--classes'``),
            for the errors.

    Raises:
        ValueError: an empty string (it would otherwise silently mean
            COCO), or a file without class names / not UTF-8.
        FileNotFoundError / IsADirectoryError: the path is missing or a
            folder. The messages name ``option``, the path and the fix.
    """
    from mmcoop.datasets.categories import (COCO2014_CATEGORIES,
                                            VOC2007_CATEGORIES)
    if name_or_path is None:
        name_or_path = 'coco'
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(
            f'{option} is empty ({name_or_path!r}). Fix: give \'coco\', '
            "'voc' or a text file with one class name per line.")
    key = name_or_path.strip().lower()
    if key in ('coco', 'coco2014'):
        return list(COCO2014_CATEGORIES)
    if key in ('voc', 'voc2007'):
        return list(VOC2007_CATEGORIES)
    if not osp.exists(name_or_path):
        raise FileNotFoundError(
            f'{option} {name_or_path!r} is neither a dataset key nor an '
            "existing file. Fix: give 'coco', 'voc' or the path of a text "
            'file with one class name per line.')
    from mmcoop.datasets.utils import check_class_names
    return check_class_names(
        [line for _, line in _read_lines(name_or_path, option,
                                         'class name')],
        f'{option} {name_or_path!r}')


def unique(seq: Sequence[str]) -> List[str]:
    """Order-preserving de-duplication."""
    return list(dict.fromkeys(seq))


def encode_prompts(text_encoder,
                   texts: Sequence[str],
                   batch_size: int = 256,
                   normalize: bool = True,
                   progress: bool = False):
    """Encode hand-written prompts with a ``FrozenCLIPTextEncoder``.

    Duplicates are encoded once; prompts are batched by length (the encoder
    truncates each batch after its last end-of-text token, so similar
    lengths waste less compute).

    Args:
        text_encoder (FrozenCLIPTextEncoder): the frozen text tower.
        texts (Sequence[str]): ``N`` prompts.
        batch_size (int): prompts per forward pass.
        normalize (bool): L2-normalise the features. Defaults to True.
        progress (bool): show a tqdm bar.

    Returns:
        Tensor: ``(N, D)`` float32 features on the CPU, in input order.
    """
    import torch
    texts = list(texts)
    uniq = unique(texts)
    order = sorted(range(len(uniq)), key=lambda i: len(uniq[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order),
                                                      batch_size)]
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc='encode prompts', unit='batch')
    feats = [None] * len(uniq)
    with torch.no_grad():
        for idx in batches:
            out = text_encoder.encode_texts([uniq[i] for i in idx])
            out = out.float().cpu()
            for i, f in zip(idx, out):
                feats[i] = f
    feats = torch.stack(feats) if feats else torch.empty(0)
    if normalize and len(feats):
        feats = feats / feats.norm(dim=-1, keepdim=True)
    pos = {t: i for i, t in enumerate(uniq)}
    return feats[[pos[t] for t in texts]] if texts else feats
