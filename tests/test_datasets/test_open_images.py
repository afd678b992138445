# Copyright (c) mmcoop contributors. All rights reserved.
"""OpenImagesMultiLabel on a tiny tree in the official formats."""
import numpy as np
import pytest
from _builders import OI_DESCRIPTIONS, OI_LABELS, build_open_images, write_text

from mmcoop.datasets import AnnotationError, OpenImagesMultiLabel

A, B, C = '000001a6bd1a5a49', '000002b66c9c498e', '00000c4bf1a3e4b0'


def all_scores(ds):
    return np.stack([ds.get_data_info(i)['gt_score'] for i in range(len(ds))])


def test_boxable_vocabulary_real_partial_labels(tmp_path):
    root = build_open_images(tmp_path / 'oi')
    ds = OpenImagesMultiLabel(root, split='train')
    # boxable file order, DisplayNames from the descriptions
    assert ds.CLASSES == ('Cat', 'Dog', 'Person')
    assert ds.metainfo['label_ids'] == ('/m/01yrx', '/m/0bt9lr', '/m/01g317')
    # images with a boxable row, sorted by ImageID
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    assert [i['img_id'] for i in infos] == [A, B, C]
    assert infos[0]['img_path'].endswith(f'train/{A}.jpg')
    np.testing.assert_array_equal(
        all_scores(ds),
        [
            [-1, -1, 1],  # Person 1 (Car is not boxable here: skipped)
            [0, 1, -1],  # Cat 0; Dog 1 and 0 from two sources -> 1
            [-1, -1, 0]
        ])  # Person verified absent (Sunset skipped)
    assert infos[1]['gt_label'] == [1]
    assert ds.labels.num_skipped == 2


def test_trainable_and_all_vocabularies(tmp_path):
    root = build_open_images(tmp_path / 'oi')
    tr = OpenImagesMultiLabel(root, vocabulary='trainable')
    # a repeated DisplayName gets its id appended
    assert tr.CLASSES == ('Person', 'Dog', 'Cat', 'Sunset', 'cat (/m/0cat2)')
    np.testing.assert_array_equal(
        all_scores(tr),
        [[1, -1, -1, -1, -1], [-1, 1, 0, -1, -1], [0, -1, -1, 1, -1]])
    al = OpenImagesMultiLabel(root, vocabulary='all', indices=2)
    assert al.CLASSES[:5] == ('Person', 'Dog', 'Cat', 'Car', 'Sunset')
    assert len(al) == 2
    np.testing.assert_array_equal(
        al.get_data_info(0)['gt_score'], [1, -1, -1, 1, -1, -1])


@pytest.mark.parametrize('labels, words', [
    ('ImageID,Source,LabelName\n', ['line 1', "['Confidence']"]),
    (OI_LABELS + '000001a6bd1a5a49,verification,/m/0zzzz,1\n',
     ['line 9', "'/m/0zzzz'", 'class descriptions', 'same Open Images']),
    (OI_LABELS + '000001a6bd1a5a49,verification,/m/01yrx,0.5\n',
     ['line 9', "'0.5'"]),
    (OI_LABELS + 'img7,verification,/m/01yrx,1\n',
     ['line 9', "'img7'", 'MultiLabelCSVDataset']),
    ('', ['empty']),
])
def test_malformed_labels(tmp_path, labels, words):
    root = build_open_images(tmp_path / 'oi', labels=labels)
    with pytest.raises(AnnotationError) as e:
        OpenImagesMultiLabel(root, vocabulary='all')
    assert 'oidv7-train-annotations-human-imagelabels.csv' in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_missing_images_and_files(tmp_path):
    root = build_open_images(tmp_path / 'oi', images=(A, B))
    with pytest.raises(FileNotFoundError, match=rf'1 of 3.*{C}\.jpg'):
        OpenImagesMultiLabel(root)
    assert len(OpenImagesMultiLabel(root, check_images=False)) == 3
    with pytest.raises(FileNotFoundError, match='oidv7-val-annotations'):
        OpenImagesMultiLabel(root, split='validation')
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        OpenImagesMultiLabel(root, vocabulary_file='nope.txt')


def test_partial_label_wrapper_hides_known_labels_only(tmp_path):
    from mmcoop.datasets import PartialLabelDataset
    root = build_open_images(tmp_path / 'oi')
    inner = OpenImagesMultiLabel(root, vocabulary='trainable')
    full = all_scores(inner)
    ds = PartialLabelDataset(inner, known_proportion=0.5, seed=1)
    got = all_scores(ds)
    known = ds.known_mask
    assert (got[full == -1] == -1).all()
    np.testing.assert_array_equal(got[known], full[known])
    assert (got[~known] == -1).all()
    assert ds.get_data_info(1)['gt_label'] == ([1] if known[1, 1] else [])


def test_repeated_display_names_get_their_id():
    """DisplayNames equal up to case, '_' and spaces (one prompt, one class
    for every class check) get their label id, so a head takes them."""
    from mmcoop.datasets.open_images import unique_display_names
    from mmcoop.models.heads.base_head import resolve_classnames
    ids = ['/m/a', '/m/b', '/m/c', '/m/d', '/m/e']
    names = ['Boot', 'boot ', 'Traffic_light', 'traffic  light', 'Cat']
    out = unique_display_names(ids, names)
    assert out == ['Boot', 'boot  (/m/b)', 'Traffic_light',
                   'traffic  light (/m/d)', 'Cat']
    assert resolve_classnames(out) == out
    with pytest.raises(ValueError, match='duplicates'):
        resolve_classnames(names)


# ---------------------------------------------------- malformed inputs
HEADER = 'ImageID,Source,LabelName,Confidence\n'


@pytest.mark.parametrize('labels, rows', [
    (HEADER, 0),  # a header only
    (HEADER + '000001a6bd1a5a49,verification,/m/0k4j,1\n', 1),  # Car only
])
def test_no_row_of_the_vocabulary_is_an_annotation_error(
        tmp_path, labels, rows):
    from mmcoop.datasets.open_images import load_open_images_labels
    root = build_open_images(tmp_path / 'oi', labels=labels)
    with pytest.raises(AnnotationError) as e:
        OpenImagesMultiLabel(root)  # boxable: Cat, Dog, Person
    msg = str(e.value)
    assert 'oidv7-train-annotations-human-imagelabels.csv' in msg
    assert "no row of the 3 'boxable' classes" in msg
    assert f'({rows} rows read)' in msg
    # the loader itself returns empty arrays of the documented shapes
    lab = load_open_images_labels(
        f'{root}/annotations/oidv7-train-annotations-human-imagelabels.csv',
        {'/m/01yrx': 0})
    assert len(lab.image_keys) == len(lab.classes) == len(lab.values) == 0
    assert lab.offsets.tolist() == [0] and lab.num_skipped == rows


@pytest.mark.parametrize('iid', [
    '0x0002b66c9c498e',  # int(s, 16) takes a 0x prefix
    '000002b6_6c9c498',  # ... and '_' separators
    ' 00002b66c9c498e',  # ... and outer spaces
    '000002B66C9C498E',  # upper case: the file is 000002b66c9c498e.jpg
    '-00002b66c9c498e',  # a sign: was a bare OverflowError
    '000002b66c9c498g',
])
def test_image_id_must_be_16_lowercase_hex_digits(tmp_path, iid):
    labels = (HEADER + '000001a6bd1a5a49,verification,/m/01g317,1\n'
              f'{iid},verification,/m/0bt9lr,1\n')
    root = build_open_images(tmp_path / 'oi', labels=labels)
    with pytest.raises(AnnotationError) as e:
        OpenImagesMultiLabel(root)
    msg = str(e.value)
    assert 'oidv7-train-annotations-human-imagelabels.csv: line 3' in msg
    assert repr(iid) in msg and '16 lowercase hex digits' in msg


def test_descriptions_line_numbers_and_one_header_only(tmp_path):
    from mmcoop.datasets.open_images import read_class_descriptions
    path = str(tmp_path / 'd.csv')
    # line 4 is bad (after a header and a blank line)
    write_text(path, 'LabelName,DisplayName\n\n/m/01g317,Person\nDog\n')
    with pytest.raises(AnnotationError, match=r"d\.csv: line 4: .*'Dog'"):
        read_class_descriptions(path)
    # only one header row is skipped: a second non-id row is an error
    write_text(path, 'LabelName,DisplayName\nnot-an-id,Thing\n'
               '/m/01g317,Person\n')
    with pytest.raises(AnnotationError, match=r"line 2: .*'not-an-id'"):
        read_class_descriptions(path)
    write_text(path, '/m/01g317,Person\n/m/0bt9lr,Dog\n/m/01g317,P2\n')
    with pytest.raises(AnnotationError, match=r"line 3: label id '/m/01g317'"):
        read_class_descriptions(path)
    # with and without a header (and a BOM)
    write_text(path, '\ufeffLabelName,DisplayName\n/m/01g317,Person\n')
    assert read_class_descriptions(path) == {'/m/01g317': 'Person'}
    write_text(path, '/m/01g317,Person\n/m/0bt9lr,Dog, the pet\n')
    assert read_class_descriptions(path) == {
        '/m/01g317': 'Person', '/m/0bt9lr': 'Dog, the pet'}


def test_non_utf8_and_folders_are_annotation_errors(tmp_path):
    import os
    import os.path as osp
    root = build_open_images(tmp_path / 'oi')
    ann = osp.join(root, 'annotations')
    labels = osp.join(ann, 'oidv7-train-annotations-human-imagelabels.csv')
    lines = OI_LABELS.encode().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'verification', b'v\xe9rification')
    with open(labels, 'wb') as f:
        f.write(b''.join(lines))
    with pytest.raises(AnnotationError) as e:
        OpenImagesMultiLabel(root)
    assert 'imagelabels.csv: line 4: not UTF-8' in str(e.value)
    # the streamed reader names the line also far into a large file
    with open(labels, 'wb') as f:
        f.write(OI_LABELS.encode() + OI_LABELS.encode().split(b'\n', 1)[1] *
                2000 + b'000001a6bd1a5a49,v\xff,/m/01g317,1\n')
    bad = OI_LABELS.count('\n') + 7 * 2000 + 1  # header + 7 rows, x2000
    with pytest.raises(AnnotationError, match=rf'line {bad}: not UTF-8'):
        OpenImagesMultiLabel(root)
    write_text(labels, OI_LABELS)
    desc = osp.join(ann, 'oidv7-class-descriptions.csv')
    with open(desc, 'wb') as f:
        f.write(b'LabelName,DisplayName\n/m/01g317,Pers\xf6n\n')
    with pytest.raises(AnnotationError, match=r'descriptions\.csv: not UTF-8'):
        OpenImagesMultiLabel(root)
    os.remove(desc)
    os.makedirs(desc)
    with pytest.raises(AnnotationError, match=r'descriptions\.csv: is a fold'):
        OpenImagesMultiLabel(root)
    os.rmdir(desc)
    write_text(desc, OI_DESCRIPTIONS)
    os.remove(labels)
    os.makedirs(labels)
    with pytest.raises(AnnotationError, match=r'imagelabels\.csv: is a fold'):
        OpenImagesMultiLabel(root)
