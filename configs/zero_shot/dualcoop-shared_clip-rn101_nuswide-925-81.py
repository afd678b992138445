# Zero-shot / generalised zero-shot multi-label recognition on NUS-WIDE, the
# 925/81 split (Huynh & Elhamifar, CVPR 2020, github.com/hbdat/cvpr20_LESA)
# as in DualCoOp's zero-shot experiments: 1006 classes, the 81 human-
# annotated concepts (unseen) then the 925 seen Flickr tags, derived from
# the official NUS_WID_Tags/TagList1k.txt (the 1,000 tags minus the concept
# names: mmcoop.datasets.unseen_splits.nuswide_925_seen).
# DualCoOp with ONE context shared by all classes (class_specific=False).
# Training: the 925 tags of each image (NUS_WID_Tags/Train_Tags1k.dat,
# complete); the 81 concepts hidden (-1, no loss). Evaluation on the test
# list: mAP, F1@3, F1@5 over the 81 unseen concepts (ZSL) and over all
# 1006 classes (GZSL).
# Needs the official files under data_root (docs/data.md): the head reads
# its 1006 class names from them when it is built.
_base_ = [
    '../_base_/models/dualcoop_clip-rn101.py',
    '../_base_/datasets/nuswide_partial_448.py',
    '../_base_/schedules/sgd-coslr-50e_dualcoop.py',
    '../_base_/default_runtime.py',
]

from mmcoop.datasets.unseen_splits import NUSWIDE_81_UNSEEN  # noqa: E402

data_root = 'data/nus-wide'

model = dict(
    head=dict(
        class_specific=False,
        # the dataset's classes: 81 concepts + 925 seen tags (_delete_:
        # replaces the base's dataset type name)
        classnames=dict(
            _delete_=True,
            type='NUSWIDEMultiLabel',
            data_root=data_root,
            tags='925'),
        # encode only the classes with known targets in the batch: the 925
        # tags (the hidden 81 are skipped; exact, see
        # mmcoop/models/heads/class_subset.py)
        class_subset=dict(num_classes=925, fill=False)))

# official README: lr 0.001 for NUS-WIDE
optim_wrapper = dict(optimizer=dict(lr=0.001))

train_dataloader = dict(
    dataset=dict(
        known_proportion=1.0,
        unseen_classes=NUSWIDE_81_UNSEEN,
        dataset=dict(data_root=data_root, tags='925')))
val_dataloader = dict(dataset=dict(data_root=data_root, tags='925'))
test_dataloader = val_dataloader

# Each part scores its images with a positive (ZSL: an unseen concept;
# GZSL: any of the 1006), as DualCoOp's per-part filtered test lists seem
# to (their script is not public). LESA, which defined the split, scores
# every test image: for its protocol set images='all' here and
# empty='keep' on the test dataset (docs/data.md, NUS-WIDE 925/81).
val_evaluator = dict(
    _delete_=True,
    type='UnseenClassMetric',
    unseen_classes=NUSWIDE_81_UNSEEN,
    images='with_positive')
test_evaluator = val_evaluator
