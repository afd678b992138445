# Copyright (c) mmcoop contributors. All rights reserved.
"""Builders of tiny real-format COCO-2014 and VOC-2007 trees, and of
photo-like test images."""
import json
import os
import os.path as osp

import numpy as np
from PIL import Image


def photo(h=96, w=120, seed=0):
    """Smooth content plus noise (JPEG-like statistics), an RGB PIL
    image."""
    rng = np.random.default_rng(seed)
    small = (rng.random((8, 10, 3)) * 255).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))
    arr = base.astype(float) + rng.normal(0, 10, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def save_image(path, size=(40, 30), color=(200, 30, 40), mode='RGB'):
    os.makedirs(osp.dirname(path), exist_ok=True)
    img = Image.new('RGB', size, color)
    if mode != 'RGB':
        img = img.convert(mode)
    img.save(path)


def write_json(path, data):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        if isinstance(data, str):
            f.write(data)
        else:
            json.dump(data, f)


# 4 categories with non-contiguous ids, listed out of order in the file.
CATEGORIES = [
    dict(supercategory='x', id=7, name='dog'),
    dict(supercategory='x', id=2, name='bicycle'),
    dict(supercategory='x', id=11, name='fire hydrant'),
    dict(supercategory='x', id=5, name='airplane'),
]
# classes in sorted-id order: bicycle(2)=0, airplane(5)=1, dog(7)=2,
# fire hydrant(11)=3


def coco_content(split='train'):
    """images 10..14; 13 has no annotation; annotations out of image order.

    Expected (official order = first annotation): 12, 10, 14, 11.
    """
    images = [
        dict(
            id=i,
            file_name=f'COCO_{split}2014_{i:012d}.jpg',
            height=30,
            width=40) for i in (10, 11, 12, 13, 14)
    ]
    anns = [
        # id, image, category, iscrowd
        (1, 12, 7, 0),
        (2, 10, 2, 0),
        (3, 12, 7, 0),  # duplicate class in the same image
        (4, 14, 11, 1),  # crowd annotation still counts (official)
        (5, 10, 5, 0),
        (6, 11, 2, 0),
        (7, 12, 2, 0),
    ]
    annotations = []
    for aid, iid, cid, crowd in anns:
        ann = dict(
            id=aid,
            image_id=iid,
            category_id=cid,
            iscrowd=crowd,
            area=100.0,
            bbox=[1.0, 2.0, 10.0, 10.0])
        ann['segmentation'] = ({
            'counts': [1, 2, 3],
            'size': [30, 40]
        } if crowd else [[1.0, 2.0, 11.0, 2.0, 11.0, 12.0]])
        annotations.append(ann)
    return dict(
        info=dict(description='tiny'),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(c) for c in CATEGORIES])


def build_coco(root, splits=('train', 'val'), content=None, images=True):
    for split in splits:
        data = content if content is not None else coco_content(split)
        write_json(
            osp.join(root, 'annotations', f'instances_{split}2014.json'), data)
        if images and isinstance(data, dict):
            for k, img in enumerate(data.get('images', [])):
                save_image(
                    osp.join(root, f'{split}2014', img['file_name']),
                    color=(10 * k, 100, 200))
    return str(root)


VOC_OBJECTS = {
    # image id -> [(name, difficult)]
    '000001': [('dog', 0), ('person', 0), ('person', 1)],
    '000002': [('cat', 1), ('chair', 0)],
    '000003': [('car', 0), ('car', 1), ('bus', 1)],
}


def voc_xml(objects, missing_difficult=False):
    objs = ''.join(
        f'<object><name>{n}</name><pose>Left</pose>' +
        ('' if missing_difficult else f'<difficult>{d}</difficult>') +
        '<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>'
        '</bndbox></object>' for n, d in objects)
    return (f'<annotation><folder>VOC2007</folder><filename>x.jpg</filename>'
            f'<size><width>40</width><height>30</height><depth>3</depth>'
            f'</size>{objs}</annotation>')


def build_voc(root, objects=None, splits=None):
    objects = VOC_OBJECTS if objects is None else objects
    splits = splits or {'trainval': ['000001', '000002'], 'test': ['000003']}
    os.makedirs(osp.join(root, 'Annotations'), exist_ok=True)
    os.makedirs(osp.join(root, 'ImageSets', 'Main'), exist_ok=True)
    for img_id, objs in objects.items():
        with open(osp.join(root, 'Annotations', f'{img_id}.xml'), 'w') as f:
            f.write(voc_xml(objs))
        save_image(osp.join(root, 'JPEGImages', f'{img_id}.jpg'))
    for split, ids in splits.items():
        with open(osp.join(root, 'ImageSets', 'Main', f'{split}.txt'),
                  'w') as f:
            f.write(''.join(i + '\n' for i in ids))
    return str(root)


#: the smallest pipeline that loads and packs a sample
PIPELINE = [dict(type='LoadImageFromFileChecked'), dict(type='PackInputs')]


def coco_cfg(root, **kw):
    """Config of the train split of a tree from :func:`build_coco`."""
    return dict(
        type='COCO2014MultiLabel',
        data_root=root,
        split='train',
        pipeline=PIPELINE,
        **kw)


def write_text(path, text):
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        f.write(text)
    return str(path)


# a user's table with verified negatives: classes cat, car, dog, person
CSV_ROWS = 'image,labels,negatives\na.jpg,dog;person,cat\nb.jpg,car,\n' \
    'c.jpg,,dog;car\n'


def build_csv(root,
              text=CSV_ROWS,
              images=('a.jpg', 'b.jpg', 'c.jpg'),
              name='train.csv'):
    """``root/name`` and the images under ``root/img``."""
    for k, img in enumerate(images):
        save_image(osp.join(root, 'img', img), color=(40 * k, 90, 10))
    return write_text(osp.join(root, name), text)


# Open Images: 5 classes in the descriptions, 3 of them boxable
OI_DESCRIPTIONS = (
    'LabelName,DisplayName\n/m/01g317,Person\n/m/0bt9lr,Dog\n'
    '/m/01yrx,Cat\n/m/0k4j,Car\n/g/11b6x,Sunset\n/m/0cat2,cat\n')
# the boxable file of V4/V5 has no header
OI_BOXABLE = '/m/01yrx,Cat\n/m/0bt9lr,Dog\n/m/01g317,Person\n'
OI_TRAINABLE = '/m/01g317\n/m/0bt9lr\n/m/01yrx\n/g/11b6x\n/m/0cat2\n'
# rows out of image order; a label verified by two sources
OI_LABELS = ('ImageID,Source,LabelName,Confidence\n'
             '000002b66c9c498e,verification,/m/0bt9lr,1\n'
             '000002b66c9c498e,verification,/m/01yrx,0\n'
             '000002b66c9c498e,crowdsource-verification,/m/0bt9lr,0\n'
             '00000c4bf1a3e4b0,verification,/m/01g317,0\n'
             '00000c4bf1a3e4b0,verification,/g/11b6x,1\n'
             '000001a6bd1a5a49,verification,/m/01g317,1\n'
             '000001a6bd1a5a49,verification,/m/0k4j,1\n')
OI_IMAGES = ('000002b66c9c498e', '00000c4bf1a3e4b0', '000001a6bd1a5a49')


def build_open_images(root, split='train', labels=OI_LABELS, images=OI_IMAGES):
    ann = osp.join(root, 'annotations')
    write_text(osp.join(ann, 'oidv7-class-descriptions.csv'), OI_DESCRIPTIONS)
    write_text(
        osp.join(ann, 'oidv7-class-descriptions-boxable.csv'), OI_BOXABLE)
    write_text(osp.join(ann, 'oidv7-classes-trainable.txt'), OI_TRAINABLE)
    short = {'train': 'train', 'validation': 'val', 'test': 'test'}[split]
    write_text(
        osp.join(ann, f'oidv7-{short}-annotations-human-imagelabels.csv'),
        labels)
    for k, iid in enumerate(images):
        save_image(osp.join(root, split, f'{iid}.jpg'), color=(k * 60, 9, 9))
    return str(root)


# NUS-WIDE: 3 concepts; train image 2 has no label
NUS_CONCEPTS = ('sky', 'water', 'person')
NUS_SPLITS = {
    # split -> [(image list entry, labels)]
    'Train': [('actor\\0001_2124494179.jpg', (2, )),
              ('sky\\0002_318021.jpg', (0, 1)), ('sky\\0003_99.jpg', ()),
              ('lake\\0004_100.jpg', (1, ))],
    'Test': [('sky\\0005_7.jpg', (0, )), ('actor\\0006_8.jpg', ())],
}


def build_nus_wide(root, splits=None, concepts=NUS_CONCEPTS, images=True):
    splits = NUS_SPLITS if splits is None else splits
    write_text(
        osp.join(root, 'Concepts81.txt'), ''.join(c + '\n' for c in concepts))
    for split, rows in splits.items():
        write_text(
            osp.join(root, 'ImageList', f'{split}Imagelist.txt'),
            ''.join(f'{name}\r\n' for name, _ in rows))
        for k, concept in enumerate(concepts):
            write_text(
                osp.join(root, 'Groundtruth', 'TrainTestLabels',
                         f'Labels_{concept}_{split}.txt'),
                ''.join(f'{int(k in labels)} \n' for _, labels in rows))
        if images:
            for j, (name, _) in enumerate(rows):
                save_image(
                    osp.join(root, 'Flickr', *name.split('\\')),
                    color=(30 * j, 50, 50))
    return str(root)


def nus_tag_list():
    """A 1,000-tag list in the form of the official ``TagList1k.txt``: the
    75 concept names the official list holds (all but ``computer``,
    ``fire``, ``map``, ``swimmers``, ``tattoo``, ``whales``) among 925
    generated tags ``tag000`` ... ``tag924``."""
    from mmcoop.datasets.categories import NUSWIDE_CONCEPTS
    absent = {'computer', 'fire', 'map', 'swimmers', 'tattoo', 'whales'}
    concepts = [c for c in NUSWIDE_CONCEPTS if c not in absent]
    others = [f'tag{i:03d}' for i in range(925)]
    # interleave: a concept after every 12 generated tags
    tags = []
    for i, t in enumerate(others):
        tags.append(t)
        if i % 12 == 11 and concepts:
            tags.append(concepts.pop(0))
    return tags + concepts


def build_nus_wide_tags(root, tag_rows):
    """The ``NUS_WID_Tags`` files of the official release: ``TagList1k.txt``
    (``\\r\\n`` line ends) and ``{split}_Tags1k.dat`` (line i: 1,000
    tab-separated 0/1 with a trailing tab, for image i of the split's
    list). ``tag_rows``: split -> one set of tag names per image."""
    tags = nus_tag_list()
    write_text(
        osp.join(root, 'NUS_WID_Tags', 'TagList1k.txt'),
        ''.join(t + '\r\n' for t in tags))
    for k, (split, rows) in enumerate(tag_rows.items()):
        end = '\r\n' if k % 2 else '\n'
        write_text(
            osp.join(root, 'NUS_WID_Tags', f'{split}_Tags1k.dat'), ''.join(
                ''.join(f'{int(t in row)}\t' for t in tags) + end
                for row in rows))
    return tags
