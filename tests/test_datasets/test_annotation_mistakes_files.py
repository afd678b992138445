# Copyright (c) mmcoop contributors. All rights reserved.
"""Mistakes a user's editor or spreadsheet makes in annotation files: a
UTF-8 byte-order mark, labels separated by the CSV delimiter, a repeated
column, a blank line in a positional list, a VOC class file, targets of
another type. Each is read as meant or refused naming the file and the
fix -- never a bare KeyError / IndexError, a misleading "not found" or a
silently dropped or truncated label."""
import os.path as osp
import re

import numpy as np
import pytest
from _builders import (OI_DESCRIPTIONS, OI_LABELS, PIPELINE, build_coco,
                       build_csv, build_nus_wide, build_nus_wide_tags,
                       build_open_images, build_voc, coco_cfg, nus_tag_list,
                       save_image, write_json, write_text)

from mmcoop.datasets import (AnnotationError, COCO2014MultiLabel,
                             MultiLabelCSVDataset, NUSWIDEMultiLabel,
                             OpenImagesMultiLabel, PartialLabelDataset,
                             VOC2007MultiLabel)
from mmcoop.datasets.categories import NUSWIDE_CONCEPTS, VOC2007_CATEGORIES

BOM = '\ufeff'


def _prepend_bom(path):
    with open(path, encoding='utf-8', newline='') as f:
        text = f.read()
    write_text(path, BOM + text)


# ---- 1. a UTF-8 byte-order mark (Notepad, PowerShell, Excel) -------------


def test_bom_is_dropped_from_every_annotation_file(tmp_path):
    coco = build_coco(tmp_path / 'coco', splits=('train', ), images=False)
    ann = osp.join(coco, 'annotations', 'instances_train2014.json')
    _prepend_bom(ann)  # was "not valid JSON ... truncated or corrupted"
    assert len(COCO2014MultiLabel(coco)) == 4

    voc = build_voc(tmp_path / 'voc')
    _prepend_bom(osp.join(voc, 'ImageSets', 'Main', 'trainval.txt'))
    ds = VOC2007MultiLabel(voc)  # was "Annotations/\ufeff000001.xml"
    assert osp.basename(ds.get_data_info(0)['img_path']) == '000001.jpg'

    nus = build_nus_wide(tmp_path / 'nus')
    _prepend_bom(osp.join(nus, 'Concepts81.txt'))  # was "Labels_\ufeff..."
    _prepend_bom(osp.join(nus, 'ImageList', 'TrainImagelist.txt'))
    ds = NUSWIDEMultiLabel(nus)  # was "images missing: Flickr/\ufeff..."
    assert not ds.CLASSES[0].startswith(BOM)

    build_csv(tmp_path / 'csv', text=BOM + '"image","labels"\r\n'
              'a.jpg,dog\r\nb.jpg,cat\r\n', images=('a.jpg', 'b.jpg'))
    ds = MultiLabelCSVDataset(  # was "no column 'image' (found '"image"')"
        'train.csv', data_root=str(tmp_path / 'csv'), data_prefix='img')
    assert ds.CLASSES == ('cat', 'dog')


def test_nus_wide_tag_list_with_bom_or_blank_line(tmp_path):
    root = build_nus_wide(
        tmp_path / 'nus',
        splits={'Train': [('a\\1.jpg', (55, )), ('b\\2.jpg', ())]},
        concepts=NUSWIDE_CONCEPTS)
    build_nus_wide_tags(root, {'Train': [{'tag000'}, {'tag924'}]})
    tag_list = osp.join(root, 'NUS_WID_Tags', 'TagList1k.txt')
    expected = [[55, 81], [81 + 924]]
    _prepend_bom(tag_list)  # was KeyError: 'tag000'
    ds = NUSWIDEMultiLabel(root, tags='925')
    assert [ds.get_data_info(i)['gt_label'] for i in range(2)] == expected
    assert len(NUSWIDEMultiLabel.class_names(root, tags='925')) == 1006
    # a blank line shifted every later tag to its neighbour's column of
    # Train_Tags1k.dat: an IndexError, or silently wrong tag labels when
    # the list ends with a concept name
    tags = nus_tag_list()
    write_text(tag_list,
               ''.join(t + '\r\n' for t in tags[:500]) + '\r\n' +
               ''.join(t + '\r\n' for t in tags[500:]))
    with pytest.raises(AnnotationError,
                       match=r'TagList1k.txt: 1001 lines, blank line\(s\) '
                       r'\[501\].*1000 tags.*Fix: restore'):
        NUSWIDEMultiLabel(root, tags='925')


# ---- 2. a CSV table whose rows are wider than its header -----------------


def csv_ds(root, text, **kw):
    build_csv(root, text=text)
    return MultiLabelCSVDataset(
        'train.csv', data_root=str(root), data_prefix='img', **kw)


@pytest.mark.parametrize('text, lost', [
    ('image,labels\na.jpg,dog,person\nb.jpg,cat\n', "['person']"),
    ('image,labels,negatives\na.jpg,dog,cat,person\nb.jpg,car,\n',
     "['person']"),
])
def test_csv_fields_beyond_the_header_are_refused(tmp_path, text, lost):
    """Labels separated by the delimiter: the extra ones were dropped (a
    positive became 0, a negative -1)."""
    with pytest.raises(AnnotationError,
                       match=r'train.csv: line 2 has \d fields but the '
                       rf'header has \d .*{re.escape(lost)} belong to no '
                       r"column.*Fix: separate the labels of a cell with ';'"):
        csv_ds(tmp_path, text)
    # empty trailing fields (a spreadsheet's) are no labels
    ds = csv_ds(tmp_path, 'image,labels\na.jpg,dog,,\nb.jpg,cat,\n')
    assert ds.CLASSES == ('cat', 'dog')


@pytest.mark.parametrize('header, column', [('image,labels,labels', 'labels'),
                                            ('image,image,labels', 'image')])
def test_csv_repeated_column_is_refused(tmp_path, header, column):
    with pytest.raises(AnnotationError,
                       match=rf"line 1 \(header\) has the column '{column}' "
                       r'2 times.*Fix'):
        csv_ds(tmp_path, header + '\na.jpg,dog,cat\nb.jpg,cat,dog\n')


@pytest.mark.parametrize('delimiter', ['', ',,', None])
def test_csv_delimiter_must_be_one_character(tmp_path, delimiter):
    with pytest.raises(ValueError,
                       match='delimiter must be one character'):
        csv_ds(tmp_path, 'image,labels\na.jpg,dog\n', delimiter=delimiter)


def test_open_images_repeated_column_extra_field_empty_name(tmp_path):
    root = build_open_images(tmp_path / 'oi')
    labels = osp.join(root, 'annotations',
                      'oidv7-train-annotations-human-imagelabels.csv')
    write_text(labels, OI_LABELS.replace('Confidence\n',
                                         'Confidence,LabelName\n', 1))
    with pytest.raises(AnnotationError,
                       match=r"line 1 \(header\) has the column\(s\) "
                       r"\['LabelName'\] more than once"):
        OpenImagesMultiLabel(root)
    write_text(labels, OI_LABELS.replace('/m/0bt9lr,1\n', '/m/0bt9lr,1,x\n',
                                         1))
    with pytest.raises(AnnotationError,
                       match=r'line 2 has 5 fields, expected 4'):
        OpenImagesMultiLabel(root)
    write_text(labels, OI_LABELS)
    write_text(
        osp.join(root, 'annotations', 'oidv7-class-descriptions.csv'),
        OI_DESCRIPTIONS.replace('/m/0bt9lr,Dog', '/m/0bt9lr, '))
    with pytest.raises(AnnotationError,
                       match=r"class-descriptions.csv: the label id\(s\) "
                       r"\['/m/0bt9lr'\].*empty DisplayName"):
        OpenImagesMultiLabel(root)


# ---- 3. VOC's class file, read as every other dataset's ------------------


def test_voc_class_file_is_cleaned_and_checked(tmp_path):
    root = build_voc(tmp_path / 'voc')
    messy = write_text(tmp_path / 'k.txt',
                       BOM + '\n\n'.join(VOC2007_CATEGORIES) + ' \n\n')
    ds = VOC2007MultiLabel(root, classes=messy)
    assert ds.CLASSES == VOC2007_CATEGORIES  # not '\ufeffaeroplane', ''
    names = list(VOC2007_CATEGORIES)
    with pytest.raises(ValueError, match=r"VOC2007MultiLabel.classes has "
                       r"duplicates: \[\['dog', 'Dog'\]\]"):
        VOC2007MultiLabel(root, classes=names + ['Dog'])
    with pytest.raises(FileNotFoundError,
                       match=r"VOC2007MultiLabel.classes='.*nope.txt' is not "
                       'a file. Fix'):
        VOC2007MultiLabel(root, classes=str(tmp_path / 'nope.txt'))


# ---- 4. targets of another type inside PartialLabelDataset ---------------


def _plain_json(tmp_path, key, values):
    """An mmpretrain ``MultiLabelDataset`` file (docs/data.md: usable
    inside the wrapper) with ``key`` of image i = ``values[i]``."""
    for i in range(len(values)):
        save_image(str(tmp_path / 'img' / f'{i}.jpg'))
    rows = [{'img_path': f'{i}.jpg', 'gt_label': []} for i in
            range(len(values))]
    for row, value in zip(rows, values):
        row[key] = value
    write_json(str(tmp_path / 'ann.json'),
               {'metainfo': {'classes': ['a', 'b', 'c']}, 'data_list': rows})
    return dict(type='MultiLabelDataset', ann_file=str(tmp_path / 'ann.json'),
                data_prefix=str(tmp_path / 'img'), pipeline=PIPELINE)


@pytest.mark.parametrize('label, words', [
    ([1.9], r'gt_label is \[1.9\], not a list of integer'),  # was class 1
    ([True], r'gt_label is \[True\], not a list of integer'),  # was 1
    (['2'], r"gt_label is \['2'\], not a list of integer"),  # was 2
    ([[0, 1]], r'gt_label is \[\[0, 1\]\], not'),  # was 0 and 1
    (None, r'gt_label is None, not'),  # was TypeError
    ([3], r'gt_label \[3\] out of range for 3 classes'),
])
def test_wrapper_refuses_labels_it_would_truncate(tmp_path, label, words):
    cfg = _plain_json(tmp_path, 'gt_label', [label, [0]])
    with pytest.raises(ValueError,
                       match=r'MultiLabelDataset\[0\] \(.*0.jpg\) of .*'
                       rf'ann.json: {words}.*Fix'):
        PartialLabelDataset(cfg, known_proportion=0.5)


@pytest.mark.parametrize('score, words', [
    ([0.5, 1, 0], r'\[0.5\]'),  # a soft label, was 0
    ([2, 1, 0], r'\[2\]'),  # was a target of 2
    ([float('nan'), 1, 0], r'\[nan\]'),  # was 0
])
def test_wrapper_refuses_scores_other_than_tri_state(tmp_path, score, words):
    cfg = _plain_json(tmp_path, 'gt_score', [score, [0, 0, 1]])
    with pytest.raises(ValueError,
                       match=rf'gt_score holds {words}, values other than '
                       r'1, 0 and -1.*Fix'):
        PartialLabelDataset(cfg, known_proportion=0.5)
    cfg = _plain_json(tmp_path, 'gt_score', [['1', '0', '0'], [0, 0, 1]])
    with pytest.raises(ValueError, match=r'gt_score has dtype <U1'):
        PartialLabelDataset(cfg, known_proportion=0.5)


def test_npz_mask_keys_stored_as_bytes(tmp_path):
    root = build_coco(tmp_path / 'coco', splits=('train', ), images=False)
    ds = PartialLabelDataset(coco_cfg(root), known_proportion=0.5)
    names = [osp.basename(ds.get_data_info(i)['img_path'])
             for i in range(len(ds))]
    mask = np.ones((len(names), 4), bool)
    mask[2, 1] = False
    path = str(tmp_path / 'mask.npz')
    np.savez(path, mask=mask[::-1], keys=np.array(names[::-1], dtype='S'))
    loaded = PartialLabelDataset(coco_cfg(root), known_proportion=0.5,
                                 mask_file=path)
    np.testing.assert_array_equal(loaded.known_mask, mask)
