# Copyright (c) mmcoop contributors. All rights reserved.
"""NUSWIDEMultiLabel on a tiny tree in the official layout."""
import os
import os.path as osp

import numpy as np
import pytest
from _builders import build_nus_wide, write_text

from mmcoop.datasets import AnnotationError, NUSWIDEMultiLabel


def scores(ds):
    return np.stack([ds.get_data_info(i)['gt_score'] for i in range(len(ds))])


def test_train_drops_unlabelled_by_default(tmp_path):
    root = build_nus_wide(tmp_path / 'nus')
    ds = NUSWIDEMultiLabel(root)
    assert ds.CLASSES == ('sky', 'water', 'person')
    assert ds.num_dropped == 1
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == [
        'actor/0001_2124494179.jpg', 'sky/0002_318021.jpg', 'lake/0004_100.jpg'
    ]
    assert ds.get_data_info(0)['img_path'] == osp.join(root, 'Flickr', 'actor',
                                                       '0001_2124494179.jpg')
    np.testing.assert_array_equal(
        scores(ds), [[0, 0, 1], [1, 1, 0], [0, 1, 0]])
    kept = NUSWIDEMultiLabel(root, empty='keep')
    np.testing.assert_array_equal(
        scores(kept), [[0, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 0]])
    test = NUSWIDEMultiLabel(root, split='test', empty='keep', test_mode=True)
    assert len(test) == 2


def test_concepts_list_folder_and_errors(tmp_path):
    root = build_nus_wide(tmp_path / 'nus')
    os.makedirs(osp.join(root, 'ConceptsList'))
    os.replace(
        osp.join(root, 'Concepts81.txt'),
        osp.join(root, 'ConceptsList', 'Concepts81.txt'))
    assert len(NUSWIDEMultiLabel(root)) == 3
    label = osp.join(root, 'Groundtruth', 'TrainTestLabels',
                     'Labels_water_Train.txt')
    write_text(label, '0\n1\n0\n')
    with pytest.raises(
            AnnotationError,
            match=r'Labels_water_Train.txt: 3 lines.*4 images'):
        NUSWIDEMultiLabel(root)
    write_text(label, '0\n1\n2\n1\n')
    with pytest.raises(AnnotationError, match=r'line 3 is \'2\''):
        NUSWIDEMultiLabel(root)
    os.remove(label)
    with pytest.raises(
            FileNotFoundError, match=r"'water'.*Labels_water_Train.txt"):
        NUSWIDEMultiLabel(root)


def test_missing_images(tmp_path):
    root = build_nus_wide(tmp_path / 'nus')
    os.remove(osp.join(root, 'Flickr', 'lake', '0004_100.jpg'))
    with pytest.raises(FileNotFoundError, match=r'1 of 3 .*lake/0004_100.jpg'):
        NUSWIDEMultiLabel(root)


def test_official_concepts_and_reworded_classes(tmp_path):
    from mmcoop.datasets.categories import NUSWIDE_CONCEPTS
    rows = [('sky\\1.jpg', (55, 75)), ('zebra\\2.jpg', (80, ))]
    root = build_nus_wide(
        tmp_path / 'nus', splits={'Train': rows}, concepts=NUSWIDE_CONCEPTS)
    ds = NUSWIDEMultiLabel(root)
    assert ds.CLASSES == NUSWIDE_CONCEPTS and len(ds.CLASSES) == 81
    assert ds.get_data_info(0)['gt_label'] == [55, 75]  # sky, water
    own = [c.upper() for c in NUSWIDE_CONCEPTS]
    assert NUSWIDEMultiLabel(root, classes=own).CLASSES == tuple(own)
    with pytest.raises(AnnotationError, match='81 concepts, but 2 classes'):
        NUSWIDEMultiLabel(root, classes=['a', 'b'])
    # the file's concepts at other positions: each class would get another
    # concept's label file (before: accepted)
    swapped = list(NUSWIDE_CONCEPTS)
    swapped[55], swapped[75] = swapped[75], swapped[55]
    with pytest.raises(AnnotationError, match=r"name categories of the file "
                       r"at other positions \('water' given as class 55"):
        NUSWIDEMultiLabel(root, classes=swapped)


def test_converter_to_csv_keeps_present_images(tmp_path, load_tool):
    from mmcoop.datasets import MultiLabelCSVDataset
    from mmcoop.utils.paths import OutputPathError
    root = build_nus_wide(tmp_path / 'nus')
    os.remove(osp.join(root, 'Flickr', 'lake', '0004_100.jpg'))
    tool = load_tool('tools/dataset_converters/nuswide_to_csv.py')
    out = str(tmp_path / 'csv' / 'train.csv')
    tool.main([root, 'train', out, '--present-only'])
    with open(out) as f:
        assert f.read().splitlines() == [
            'image,labels', 'actor/0001_2124494179.jpg,person',
            'sky/0002_318021.jpg,sky;water'
        ]
    ds = MultiLabelCSVDataset(
        out,
        data_root=root,
        data_prefix='Flickr',
        classes=str(tmp_path / 'csv' / 'classes.txt'))
    np.testing.assert_array_equal(scores(ds), [[0, 0, 1], [1, 1, 0]])
    with pytest.raises(OutputPathError, match='--force'):
        tool.main([root, 'train', out])
    # the test split next to it keeps classes.txt, which lists the same
    # concepts; a classes.txt that lists others is not overwritten
    classes = tmp_path / 'csv' / 'classes.txt'
    before = classes.stat().st_mtime_ns
    tool.main([root, 'test', str(tmp_path / 'csv' / 'test.csv')])
    assert classes.stat().st_mtime_ns == before
    assert (tmp_path / 'csv' / 'test.csv').read_text().splitlines() == [
        'image,labels', 'sky/0005_7.jpg,sky'
    ]
    classes.write_text('mine\n')
    with pytest.raises(OutputPathError, match='classes.txt.*--force'):
        tool.main([root, 'test', str(tmp_path / 'csv' / 'test2.csv')])
    assert classes.read_text() == 'mine\n'
    assert not (tmp_path / 'csv' / 'test2.csv').exists()
    with pytest.raises(ValueError, match='inside the dataset folder'):
        tool.main([root, 'train', osp.join(root, 'train.csv')])


def test_converter_interrupted_leaves_no_table(tmp_path, load_tool,
                                               monkeypatch):
    """A run killed mid-table leaves no train.csv (a truncated one would be
    read as a smaller dataset, and block the rerun); the rerun writes it."""
    root = build_nus_wide(tmp_path / 'nus')
    tool = load_tool('tools/dataset_converters/nuswide_to_csv.py')
    out = tmp_path / 'csv' / 'train.csv'
    real = tool.csv.writer

    class CutWriter:
        def __init__(self, f):
            self.writer, self.rows = real(f), 0

        def writerow(self, row):
            self.rows += 1
            if self.rows == 3:  # header and one image written
                raise KeyboardInterrupt
            return self.writer.writerow(row)

    monkeypatch.setattr(tool.csv, 'writer', CutWriter)
    with pytest.raises(KeyboardInterrupt):
        tool.main([root, 'train', str(out)])
    assert os.listdir(tmp_path / 'csv') == []
    monkeypatch.undo()
    tool.main([root, 'train', str(out)])
    assert len(out.read_text().splitlines()) == 4  # header + 3 images


@pytest.mark.parametrize('empty', ['drop', 'keep'])
def test_repeated_image_list_line_is_refused(tmp_path, empty):
    # the same image on lines 1 and 4, with different labels
    rows = [('actor\\0001_2124494179.jpg', (2, )), ('sky\\0002.jpg', (0, )),
            ('sky\\0003.jpg', (1, )), ('actor\\0001_2124494179.jpg', (0, ))]
    root = build_nus_wide(tmp_path / 'nus', splits={'Train': rows})
    with pytest.raises(AnnotationError) as e:
        NUSWIDEMultiLabel(root, empty=empty)
    msg = str(e.value)
    assert 'TrainImagelist.txt: lines 1 and 4' in msg
    assert "'actor\\\\0001_2124494179.jpg'" in msg and 'Fix' in msg


@pytest.mark.parametrize('empty', ['drop', 'keep'])
def test_empty_or_repeated_concept_list_is_refused(tmp_path, empty):
    root = build_nus_wide(tmp_path / 'nus')
    concepts = osp.join(root, 'Concepts81.txt')
    write_text(concepts, '\n \n')
    with pytest.raises(AnnotationError, match=r'Concepts81.txt: the concept '
                       'list is empty'):
        NUSWIDEMultiLabel(root, empty=empty)
    with pytest.raises(AnnotationError, match='Concepts81.txt.*empty'):
        NUSWIDEMultiLabel.class_names(root)
    # 'Sky' is 'sky' for every class check (and one prompt)
    write_text(concepts, 'sky\nwater\nSky\n')
    with pytest.raises(AnnotationError) as e:
        NUSWIDEMultiLabel(root, empty=empty)
    assert 'Concepts81.txt' in str(e.value)
    assert "duplicates: [['sky', 'Sky']]" in str(e.value)


def test_non_utf8_and_folder_inputs(tmp_path):
    root = build_nus_wide(tmp_path / 'nus')
    image_list = osp.join(root, 'ImageList', 'TrainImagelist.txt')
    with open(image_list, 'ab') as f:
        f.write(b'caf\xe9\\0009_1.jpg\r\n')
    with pytest.raises(AnnotationError,
                       match=r'TrainImagelist.txt: not UTF-8'):
        NUSWIDEMultiLabel(root)
    os.remove(image_list)
    os.makedirs(image_list)
    with pytest.raises(AnnotationError,
                       match=r'TrainImagelist.txt: is a folder'):
        NUSWIDEMultiLabel(root)
    with pytest.raises(AnnotationError, match=r'ImageList: is a folder'):
        NUSWIDEMultiLabel(root, concepts_file='ImageList')


def test_converted_csv_loads_with_the_documented_config(tmp_path, load_tool,
                                                        monkeypatch):
    """docs/data.md's converter command and config values, run from the
    folder that holds ``data/``: the table loads with the concepts'
    labels (relative paths as the page gives them)."""
    import re

    from mmcoop.datasets import MultiLabelCSVDataset
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    with open(osp.join(repo, 'docs', 'data.md'), encoding='utf-8') as f:
        doc = f.read()
    commands = re.findall(r'nuswide_to_csv\.py (.*?) --present-only',
                          doc.replace('\\\n', ' '))
    assert [c.split()[1] for c in commands] == ['train', 'test']
    config = re.search(r'and in the config, (.*?)\n  \(', doc, re.S).group(1)
    kwargs = dict(re.findall(r"`(\w+)='([^']*)'`", config))
    assert set(kwargs) == {'data_root', 'ann_file', 'data_prefix', 'classes'}
    build_nus_wide(tmp_path / 'data' / 'nus-wide')
    monkeypatch.chdir(tmp_path)
    tool = load_tool('tools/dataset_converters/nuswide_to_csv.py')
    for command in commands:  # the second keeps the first's classes.txt
        tool.main(command.split() + ['--present-only'])
    for ann_file, n in ((kwargs['ann_file'], 3),
                        (kwargs['ann_file'].replace('train', 'test'), 1)):
        ds = MultiLabelCSVDataset(**dict(kwargs, ann_file=ann_file))
        assert len(ds) == n
        assert all(osp.isfile(ds.get_data_info(i)['img_path'])
                   for i in range(len(ds)))
