# Copyright (c) mmcoop contributors. All rights reserved.
"""The one reading of class lists and annotation text
(mmcoop.datasets.utils): files with a BOM, blank lines and spaces;
names equal up to case, '_' and spaces refused; a file that is not UTF-8,
or a folder, named with the fix."""
import pytest

from mmcoop.datasets import AnnotationError
from mmcoop.datasets.utils import (check_class_names, read_annotation_text,
                                   read_class_list)


def test_class_list_file_is_cleaned_and_checked(tmp_path):
    path = tmp_path / 'k.txt'
    path.write_text('\ufeffcat \n\n  dog\r\nhot_dog\n\n', encoding='utf-8')
    assert read_class_list(str(path)) == ['cat', 'dog', 'hot_dog']
    assert read_class_list(['cat', 'dog']) == ['cat', 'dog']
    path.write_text('cat\ndog\nCat\n', encoding='utf-8')
    with pytest.raises(ValueError, match=r"'.*k\.txt' \(classes\) has "
                       r"duplicates: \[\['cat', 'Cat'\]\]"):
        read_class_list(str(path))
    with pytest.raises(ValueError, match=r"unseen has duplicates: "
                       r"\[\['hot dog', 'hot_dog'\]\]"):
        read_class_list(['hot dog', 'hot_dog'], 'unseen')
    with pytest.raises(FileNotFoundError, match=(
            r"PartialLabelDataset\.unseen_classes='dog' is not a file\. "
            r"Fix: give a list of class names \(e\.g\. "
            r"PartialLabelDataset\.unseen_classes=\['dog', 'cat'\]\)")):
        read_class_list('dog', 'PartialLabelDataset.unseen_classes')


@pytest.mark.parametrize('names,match', [
    (['a', ''], r"names\[1\] is '': each class needs a name"),
    (['a', 3], r'names\[1\] is 3'),
    (['Traffic_Light', ' traffic  light'],
     r"names has duplicates: \[\['Traffic_Light', ' traffic  light'\]\]"),
])
def test_check_class_names(names, match):
    with pytest.raises(ValueError, match=match):
        check_class_names(names, 'names')


def test_annotation_text_not_utf8_or_a_folder(tmp_path):
    latin = tmp_path / 'train.csv'
    latin.write_bytes('image,labels\na.jpg,caf\xe9\n'.encode('latin-1'))
    with pytest.raises(AnnotationError, match=r"train\.csv: not UTF-8 text "
                       r'\(byte 22: .*\)\. Fix: save the file as UTF-8\.'):
        read_annotation_text(str(latin))
    with pytest.raises(AnnotationError, match=r'is a folder, not an '
                       'annotation file'):
        read_annotation_text(str(tmp_path))
    latin.write_text('image,labels\n', encoding='utf-8')
    assert read_annotation_text(str(latin)) == 'image,labels\n'


@pytest.mark.parametrize('key, value', [
    ('classes', {0: 'cat', 1: 'dog'}),
    ('classes', {'cat'}),
    ('metainfo.classes', {'cat': 0}),
])
def test_class_list_of_another_kind_is_named(coco_root, key, value):
    """A dict was mmpretrain's "Unsupported type <class 'dict'> of
    classes" (in metainfo: its keys became the classes)."""
    from mmcoop.datasets import COCO2014MultiLabel
    kwargs = dict(classes=value) if key == 'classes' else dict(
        metainfo=dict(classes=value))
    with pytest.raises(ValueError) as err:
        COCO2014MultiLabel(coco_root, lazy_init=True, **kwargs)
    assert str(err.value) == (
        f'COCO2014MultiLabel.{key} is {value!r} ({type(value).__name__}); a '
        'class list is a list or tuple of names in class-index order, or '
        "the path of a text file with one name a line. Fix: give e.g. "
        "['dog', 'cat'] or 'classes.txt'.")
