# Copyright (c) mmcoop contributors. All rights reserved.
"""Builders of tiny real-format COCO-2014 and VOC-2007 trees."""
import json
import os
import os.path as osp

from PIL import Image


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
