# Copyright (c) mmcoop contributors. All rights reserved.
"""MultiLabelCSVDataset / MultiLabelJSONDataset on tiny real-format files."""
import os
import os.path as osp

import numpy as np
import pytest
from _builders import build_coco, build_csv, coco_content, write_text

from mmcoop.datasets import (AnnotationError, MultiLabelCSVDataset,
                             MultiLabelJSONDataset, PartialLabelDataset)


def csv_ds(root, **kw):
    return MultiLabelCSVDataset(
        'train.csv', data_root=str(root), data_prefix='img', **kw)


def scores(ds):
    return np.stack([ds.get_data_info(i)['gt_score'] for i in range(len(ds))])


def test_csv_with_negatives_is_tri_state(tmp_path):
    build_csv(tmp_path)
    ds = csv_ds(tmp_path)
    # classes from the data: sorted names of labels and negatives
    assert ds.CLASSES == ('car', 'cat', 'dog', 'person')
    assert ds.has_negatives
    np.testing.assert_array_equal(
        scores(ds),
        [
            [-1, 0, 1, 1],  # dog;person positive, cat verified negative
            [1, -1, -1, -1],  # car positive, rest unknown
            [0, -1, 0, -1],  # no positive, dog and car verified negatives
        ])
    info = ds.get_data_info(0)
    assert info['gt_label'] == [2, 3]
    assert info['img_path'] == osp.join(str(tmp_path), 'img', 'a.jpg')
    assert 'gt_negative' not in info


def test_csv_without_negatives_is_complete(tmp_path):
    build_csv(
        tmp_path,
        text='image,labels\na.jpg,dog|person\nb.jpg,car\n'
        'c.jpg,\n')
    ds = csv_ds(
        tmp_path, label_separator='|', classes=['person', 'dog', 'car', 'bus'])
    assert not ds.has_negatives
    np.testing.assert_array_equal(
        scores(ds), [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])


def test_csv_classes_from_file_and_renamed_columns(tmp_path):
    build_csv(
        tmp_path,
        text='file;tags;neg\na.jpg;cat,dog;\nb.jpg;;cat\n'
        'c.jpg;dog;\n')
    cls = write_text(tmp_path / 'classes.txt', 'dog\ncat\n')
    ds = csv_ds(
        tmp_path,
        classes=cls,
        image_column='file',
        label_column='tags',
        negative_column='neg',
        delimiter=';',
        label_separator=',')
    assert ds.CLASSES == ('dog', 'cat')
    np.testing.assert_array_equal(scores(ds), [[1, 1], [-1, 0], [1, -1]])


@pytest.mark.parametrize('text, words', [
    ('', ['train.csv', 'empty', 'header']),
    ('image,labels\n', ['train.csv', 'no data rows']),
    ('img,labels\na.jpg,dog\n',
     ['train.csv', 'line 1', "'image'", 'image_column=']),
    ('image,labels\na.jpg,dog\nb.jpg,cat\na.jpg,car\n',
     ['train.csv', 'line 4', "'a.jpg'", 'line 2', 'merge']),
    ('image,labels,negatives\na.jpg,dog,dog\n',
     ['train.csv', 'line 2', "['dog']", 'both']),
    ('image,labels\na.jpg,dog\nb.jpg,zebra\n',
     ['train.csv', 'line 3', 'zebra', 'classes=']),
])
def test_csv_errors_name_file_line_and_fix(tmp_path, text, words):
    build_csv(tmp_path, text=text)
    with pytest.raises(AnnotationError) as e:
        csv_ds(tmp_path, classes=['dog', 'cat', 'car'])
    for w in words:
        assert w in str(e.value)


def test_csv_missing_images_and_file(tmp_path):
    build_csv(tmp_path, images=('a.jpg', ))
    with pytest.raises(
            FileNotFoundError,
            match=r'2 of 3 listed images.*b\.jpg.*check_images'):
        csv_ds(tmp_path)
    assert len(csv_ds(tmp_path, check_images=False)) == 3
    with pytest.raises(FileNotFoundError, match='nothere.csv'):
        MultiLabelCSVDataset('nothere.csv', data_root=str(tmp_path))


def test_real_unknowns_stay_unknown_in_partial_label_dataset(tmp_path):
    """Simulated hiding applies to known labels; real -1 pass through."""
    build_csv(tmp_path)
    inner = csv_ds(tmp_path)
    full = scores(inner)
    for p in (1.0, 0.5):
        ds = PartialLabelDataset(inner, known_proportion=p, seed=3)
        got = np.stack([ds.get_data_info(i)['gt_score'] for i in range(3)])
        assert (got[full == -1] == -1).all()  # real unknowns stay unknown
        known = ds.known_mask
        np.testing.assert_array_equal(got[known], full[known])
        assert (got[~known] == -1).all()
    np.testing.assert_array_equal(
        PartialLabelDataset(inner,
                            known_proportion=1.0).get_data_info(0)['gt_score'],
        [-1, 0, 1, 1])


def test_json_reuses_coco_parser_keeps_empty_images(tmp_path):
    root = build_coco(tmp_path / 'mine', splits=('train', ))
    ann = 'annotations/instances_train2014.json'
    ds = MultiLabelJSONDataset(ann, data_root=root, data_prefix='train2014')
    # categories sorted by id: bicycle(2), airplane(5), dog(7), hydrant(11)
    assert ds.CLASSES == ('bicycle', 'airplane', 'dog', 'fire hydrant')
    # all images in file order; 13 has no annotation -> all absent (0)
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == \
        [10, 11, 12, 13, 14]
    np.testing.assert_array_equal(
        scores(ds),
        [[1, 1, 0, 0], [1, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    kept = MultiLabelJSONDataset(
        ann, data_root=root, data_prefix='train2014', filter_empty=True)
    assert len(kept) == 4
    with pytest.raises(AnnotationError, match='#2'):
        MultiLabelJSONDataset(
            ann,
            data_root=root,
            data_prefix='train2014',
            classes=['bicycle', 'airplane', 'cat', 'x'])
    own = MultiLabelJSONDataset(
        ann,
        data_root=root,
        data_prefix='train2014',
        classes=['bike', 'plane', 'dog', 'hydrant'],
        strict_class_names=False)
    assert own.CLASSES == ('bike', 'plane', 'dog', 'hydrant')
    os.remove(
        osp.join(root, 'train2014',
                 coco_content()['images'][0]['file_name']))
    with pytest.raises(FileNotFoundError, match='1 of 5 listed images'):
        MultiLabelJSONDataset(ann, data_root=root, data_prefix='train2014')


def test_json_bad_category_names_the_annotation(tmp_path):
    data = coco_content()
    data['annotations'][0]['category_id'] = 99
    root = build_coco(tmp_path / 'bad', splits=('train', ), content=data)
    with pytest.raises(
            AnnotationError,
            match=r'annotations\[0\].*99.*MultiLabelJSONDataset'):
        MultiLabelJSONDataset(
            'annotations/instances_train2014.json',
            data_root=root,
            data_prefix='train2014')
    with pytest.raises(FileNotFoundError, match='none.json.*ann_file'):
        MultiLabelJSONDataset('none.json', data_root=root)
