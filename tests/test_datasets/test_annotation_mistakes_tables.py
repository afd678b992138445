# Copyright (c) mmcoop contributors. All rights reserved.
"""Mistakes in a user's tables (CSV, COCO-style JSON, COCO-2014) and class
lists: each one is refused with the file, the line / entry and the fix --
never a shifted class list, a silent policy switch or a merged sample."""
import re

import numpy as np
import pytest
from _builders import build_coco, build_csv, coco_content, write_text

from mmcoop.datasets import (AnnotationError, COCO2014MultiLabel,
                             MultiLabelCSVDataset, MultiLabelJSONDataset)

ANN = 'annotations/instances_train2014.json'


def csv_ds(root, **kw):
    return MultiLabelCSVDataset(
        'train.csv', data_root=str(root), data_prefix='img', **kw)


def json_ds(root, **kw):
    return MultiLabelJSONDataset(
        ANN, data_root=root, data_prefix='train2014', **kw)


def scores(ds):
    return np.stack([ds.get_data_info(i)['gt_score'] for i in range(len(ds))])


def coco_tree(tmp_path, mutate=None, images=False):
    data = coco_content()
    if mutate is not None:
        mutate(data)
    return build_coco(
        tmp_path / 'c', splits=('train', ), content=data, images=images)


# ---- 1. class-list files -------------------------------------------------

MESSY = '\ufeffdog \n\ncat\t\n\n'  # BOM, trailing spaces, blank lines


def test_csv_class_file_is_cleaned(tmp_path):
    build_csv(tmp_path)
    cls = write_text(tmp_path / 'k.txt', MESSY + 'car\nperson\n')
    ds = csv_ds(tmp_path, classes=cls)
    assert ds.CLASSES == ('dog', 'cat', 'car', 'person')
    np.testing.assert_array_equal(
        scores(ds)[0], [1, 0, -1, 1])  # a.jpg: dog;person, not cat


def _load(make, root, **kwargs):
    """The COCO-format tree ``root`` as the JSON table or as COCO."""
    if make == 'json':
        return json_ds(root, check_images=False, **kwargs)
    return COCO2014MultiLabel(root, **kwargs)


@pytest.mark.parametrize('make', ['json', 'coco'])
def test_coco_style_class_file_is_cleaned(tmp_path, make):
    root = coco_tree(tmp_path)
    cls = write_text(tmp_path / 'k.txt',
                     '\ufeffbicycle \n\nairplane\ndog\n\nfire hydrant  \n')
    ds = _load(make, root, classes=cls)
    assert ds.CLASSES == ('bicycle', 'airplane', 'dog', 'fire hydrant')


@pytest.mark.parametrize('make', ['csv', 'json', 'coco'])
def test_class_file_repeats_and_missing_are_refused(tmp_path, make):
    build_csv(tmp_path)
    root = coco_tree(tmp_path)
    name = {
        'csv': 'MultiLabelCSVDataset',
        'json': 'MultiLabelJSONDataset',
        'coco': 'COCO2014MultiLabel'
    }[make]

    def build(**kw):
        if make == 'csv':
            return csv_ds(tmp_path, **kw)
        return _load(make, root, **kw)

    cls = write_text(tmp_path / 'k.txt', 'dog\ncat\nDog\ncar\n')
    with pytest.raises(ValueError, match=r"k\.txt' \(" + name +
                       r"\.classes\) has duplicates: \[\['dog', 'Dog'\]\]"):
        build(classes=cls)
    with pytest.raises(ValueError, match=name + r'\.classes has duplicates'):
        build(classes=['dog', 'hot dog', 'hot_dog', 'x'])
    with pytest.raises(FileNotFoundError,
                       match=name + r"\.classes='nothere\.txt' is not a file"):
        build(classes='nothere.txt')
    with pytest.raises(ValueError, match=name + r'\.metainfo\.classes'):
        build(metainfo=dict(classes=['a', 'A', 'b', 'c']))


# ---- 2. an explicit negative_column must exist ---------------------------


def test_csv_explicit_negative_column_must_be_in_header(tmp_path):
    build_csv(tmp_path, text='image,labels\na.jpg,dog\nb.jpg,cat\n',
              images=('a.jpg', 'b.jpg'))
    with pytest.raises(AnnotationError) as e:
        csv_ds(tmp_path, negative_column='negs')
    msg = str(e.value)
    for w in ('train.csv', 'line 1', "'negs'", "['image', 'labels']",
              'negative_column=None'):
        assert w in msg
    # spelt as the default but set explicitly: still required
    with pytest.raises(AnnotationError, match="no column 'negatives'"):
        csv_ds(tmp_path, negative_column='negatives')
    # the default: used if present, else complete labels
    ds = csv_ds(tmp_path)
    assert not ds.has_negatives and ds.negative_column == 'negatives'
    np.testing.assert_array_equal(scores(ds), [[0, 1], [1, 0]])
    assert not csv_ds(tmp_path, negative_column=None).has_negatives


# ---- 3. quotes and line breaks -------------------------------------------


def test_csv_unclosed_quote_is_refused(tmp_path):
    build_csv(tmp_path, text='image,labels\na.jpg,"dog\nb.jpg,cat\n',
              images=('a.jpg', 'b.jpg'))
    with pytest.raises(AnnotationError) as e:
        csv_ds(tmp_path)
    msg = str(e.value)
    assert 'train.csv: line 2' in msg and 'never closed' in msg
    assert 'at line 3' in msg and 'close the quote' in msg


def test_csv_label_with_line_break_is_refused(tmp_path):
    build_csv(tmp_path, text='image,labels\na.jpg,"dog\nb.jpg,cat"\n'
              'c.jpg,cat\n')
    with pytest.raises(AnnotationError) as e:
        csv_ds(tmp_path)
    msg = str(e.value)
    assert 'train.csv: line 2' in msg and 'line break' in msg
    assert "'labels'" in msg


def test_csv_quoted_cells_still_work(tmp_path):
    build_csv(tmp_path, text='image,labels\n"a.jpg","dog;cat"\nb.jpg,\n'
              'c.jpg,"cat"\n')
    ds = csv_ds(tmp_path)
    assert ds.CLASSES == ('cat', 'dog')
    np.testing.assert_array_equal(scores(ds), [[1, 1], [0, 0], [1, 0]])


# ---- 4. one image listed twice -------------------------------------------


def test_csv_same_image_spelt_twice_is_refused(tmp_path):
    build_csv(tmp_path, text='image,labels\na.jpg,dog\nb.jpg,cat\n'
              './a.jpg,cat\n')
    with pytest.raises(AnnotationError) as e:
        csv_ds(tmp_path)
    msg = str(e.value)
    for w in ('train.csv', 'line 4', "'./a.jpg'", 'line 2', "'a.jpg'",
              'merge'):
        assert w in msg


@pytest.mark.parametrize('make', ['json', 'coco'])
def test_json_same_file_name_twice_is_refused(tmp_path, make):
    def twice(d):
        d['images'][3]['file_name'] = './' + d['images'][1]['file_name']

    root = coco_tree(tmp_path, twice)
    with pytest.raises(AnnotationError) as e:
        _load(make, root)
    msg = str(e.value)
    for w in ('instances_train2014.json', 'images[3] (id=13',
              'images[1] (id=11', 'same file', 'list each image once'):
        assert w in msg


# ---- 5. unreadable annotation files --------------------------------------


def test_not_utf8_and_folders_are_named(tmp_path):
    build_csv(tmp_path)
    (tmp_path / 'train.csv').write_bytes(b'image,labels\na.jpg,caf\xe9\n')
    with pytest.raises(AnnotationError,
                       match=r'train\.csv: not UTF-8.*save the file as UTF-8'):
        csv_ds(tmp_path)
    (tmp_path / 'd.csv').mkdir()
    with pytest.raises(AnnotationError, match=r'd\.csv: is a folder'):
        MultiLabelCSVDataset('d.csv', data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError,
                       match=r"MultiLabelCSVDataset.*'.*none\.csv' not found"):
        MultiLabelCSVDataset('none.csv', data_root=str(tmp_path))

    root = coco_tree(tmp_path)
    with open(f'{root}/{ANN}', 'ab') as f:
        f.write(b' \xff')
    with pytest.raises(AnnotationError,
                       match=r'instances_train2014\.json: not UTF-8'):
        json_ds(root)
    with pytest.raises(AnnotationError,
                       match=r'instances_train2014\.json: not UTF-8'):
        COCO2014MultiLabel(root)
    with pytest.raises(AnnotationError, match=r'annotations: is a folder'):
        MultiLabelJSONDataset('annotations', data_root=root)
    with pytest.raises(FileNotFoundError,
                       match=r'MultiLabelJSONDataset.*none\.json.*ann_file'):
        MultiLabelJSONDataset('none.json', data_root=root)
    with pytest.raises(FileNotFoundError, match='Expected the layout'):
        COCO2014MultiLabel(str(tmp_path / 'nothing'))


# ---- 6. class names equal up to case / '_' / spaces, or empty -------------


def test_csv_label_names_equal_up_to_case_are_refused(tmp_path):
    build_csv(tmp_path, text='image,labels\na.jpg,Dog\nb.jpg,cat\n'
              'c.jpg,dog;cat\n')
    with pytest.raises(AnnotationError) as e:
        csv_ds(tmp_path)
    msg = str(e.value)
    for w in ('train.csv', "[['Dog', 'dog']]", "'Dog' on line 2",
              "'dog' on line 4", 'spell each class the same way'):
        assert w in msg
    build_csv(tmp_path, text='image,labels\na.jpg,hot dog\nb.jpg,hot_dog\n'
              'c.jpg,\n')
    with pytest.raises(AnnotationError, match=r"\['hot dog', 'hot_dog'\]"):
        csv_ds(tmp_path)


@pytest.mark.parametrize('make', ['json', 'coco'])
@pytest.mark.parametrize('name, words', [
    ('Dog', ["categories has duplicates: [['dog', 'Dog']]"]),
    ('', ["categories[2] is ''", 'each class needs a name']),
])
def test_category_names_equal_or_empty_are_refused(tmp_path, make, name,
                                                   words):
    def rename(d):
        d['categories'][2]['name'] = name  # fire hydrant (id 11)

    root = coco_tree(tmp_path, rename)
    with pytest.raises(AnnotationError) as e:
        _load(make, root)
    msg = str(e.value)
    assert 'instances_train2014.json: ' in msg
    for w in words:
        assert w in msg


# ---- 7. a category with a file_name --------------------------------------


def test_category_with_file_name_keeps_its_name(tmp_path):
    def icon(d):
        d['categories'][0]['file_name'] = 'icons/dog.png'

    ds = json_ds(coco_tree(tmp_path / 'ok', icon), check_images=False)
    assert ds.CLASSES == ('bicycle', 'airplane', 'dog', 'fire hydrant')

    def icon_no_name(d):
        d['categories'][0]['file_name'] = 'icons/dog.png'
        del d['categories'][0]['name']

    with pytest.raises(AnnotationError,
                       match=r"categories\[0\] has no 'name' field"):
        json_ds(coco_tree(tmp_path / 'bad', icon_no_name),
                check_images=False)


def test_relative_data_root_not_found_names_the_working_directory(
        tmp_path, monkeypatch):
    """A relative ``data_root`` run from another folder: the error says
    where it was looked for (before: only the relative path, and for the
    JSON files the COCO-2014 layout)."""
    build_csv(str(tmp_path / 'data' / 'mydata'))
    build_coco(str(tmp_path / 'data' / 'coco'), splits=('train', ))
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    note = (r"\(a relative path, read from the working directory "
            rf"'{re.escape(str(elsewhere))}': run from the folder it is "
            r'relative to, or give an absolute data_root\)')
    with pytest.raises(FileNotFoundError, match='not found ' + note):
        csv_ds('data/mydata')
    with pytest.raises(FileNotFoundError, match='not found ' + note):
        json_ds('data/coco')
    with pytest.raises(FileNotFoundError, match=r"not found: 'data/coco/"
                       r"annotations/instances_train2014\.json' " + note):
        COCO2014MultiLabel('data/coco', split='train')
    monkeypatch.chdir(tmp_path)
    assert len(csv_ds('data/mydata')) == 3


# ---- 6. the negatives column: named like it, or never filled -------------


@pytest.mark.parametrize('column', ['Negatives', 'negative', 'neg_labels'])
def test_csv_column_named_like_negatives_is_refused(tmp_path, column):
    """The default negative_column matches 'negatives' exactly: a column
    named like it was ignored and the file read as a complete labelling
    (its verified negatives dropped, every unknown label a negative)."""
    build_csv(tmp_path, text=f'image,labels,{column}\na.jpg,dog,cat\n'
              'b.jpg,cat,\n', images=('a.jpg', 'b.jpg'))
    with pytest.raises(AnnotationError) as e:
        csv_ds(tmp_path)
    msg = str(e.value)
    for w in ('train.csv', 'line 1', repr(column), "'negatives'",
              'complete labelling', f'negative_column={column!r}',
              'negative_column=None'):
        assert w in msg
    ds = csv_ds(tmp_path, negative_column=column)  # the fix
    np.testing.assert_array_equal(scores(ds), [[0, 1], [1, -1]])
    assert not csv_ds(tmp_path, negative_column=None).has_negatives


def test_csv_negatives_column_no_row_fills_is_warned(tmp_path, mm_log):
    """Every unlisted class is then unknown: legitimate for positive-only
    labels, but a complete labelling exported with an empty column scored
    AP 100 for every model."""
    build_csv(tmp_path, text='image,labels,negatives\na.jpg,dog,\n'
              'b.jpg,cat,\n', images=('a.jpg', 'b.jpg'))
    ds = csv_ds(tmp_path)
    np.testing.assert_array_equal(scores(ds), [[-1, 1], [1, -1]])
    msg = mm_log.getvalue()
    for w in ('train.csv', "no row fills the 'negatives' column",
              'unknown (-1)', 'negative_column=None'):
        assert w in msg
    build_csv(tmp_path, text='image,labels,negatives\na.jpg,dog,cat\n'
              'b.jpg,cat,\n', images=('a.jpg', 'b.jpg'))
    mm_log.truncate(0)
    csv_ds(tmp_path)
    assert 'no row fills' not in mm_log.getvalue()


def test_same_image_relative_and_absolute_is_refused(tmp_path):
    """'a.jpg' and '<data_root>/img/a.jpg' name one file: refused as a
    repeated image (before: two samples with contradictory labels)."""
    absolute = str(tmp_path / 'img' / 'a.jpg')
    build_csv(tmp_path, text=f'image,labels\na.jpg,dog\n{absolute},cat\n',
              images=('a.jpg', ))
    with pytest.raises(AnnotationError, match='line 3 repeats image'):
        csv_ds(tmp_path)

    def twice(d):
        d['images'][3]['file_name'] = str(
            tmp_path / 'c' / 'train2014' / d['images'][1]['file_name'])

    root = coco_tree(tmp_path, twice)
    for make in ('json', 'coco'):
        with pytest.raises(AnnotationError, match='same file'):
            _load(make, root)


def test_composed_and_decomposed_names_are_one_class(tmp_path):
    """'café' typed (NFC) and written by macOS (NFD) read the same and are
    one prompt for CLIP's tokenizer: one class, not two; a label in one
    form finds the class named in the other."""
    composed, decomposed = 'caf\u00e9', 'cafe\u0301'
    build_csv(tmp_path, text=f'image,labels\na.jpg,{decomposed}\n'
              'b.jpg,tea\n', images=('a.jpg', 'b.jpg'))
    ds = csv_ds(tmp_path, classes=[composed, 'tea'])
    np.testing.assert_array_equal(scores(ds), [[1, 0], [0, 1]])
    build_csv(tmp_path, text=f'image,labels\na.jpg,{decomposed}\n'
              f'b.jpg,{composed}\n', images=('a.jpg', 'b.jpg'))
    ds = csv_ds(tmp_path)  # classes from the data: one
    assert len(ds.CLASSES) == 1
    with pytest.raises(ValueError, match='equal'):
        csv_ds(tmp_path, classes=[composed, decomposed])


def test_data_prefix_without_img_path_is_named(tmp_path):
    """mmdet's key (`img`) gave mmpretrain's bare KeyError: 'img_path'."""
    build_csv(tmp_path)
    with pytest.raises(ValueError) as e:
        MultiLabelCSVDataset('train.csv', data_root=str(tmp_path),
                             data_prefix=dict(img='img'))
    msg = str(e.value)
    assert 'MultiLabelCSVDataset: data_prefix=' in msg
    assert "data_prefix=dict(img_path='images')" in msg
