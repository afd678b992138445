# PASCAL VOC 2007 with partial training labels, 448 x 448 (official
# DualCoOp / PositiveCoOp protocol): the pipelines, the partial-label wrapper
# and the evaluator of the COCO config; train on trainval (5,011 images)
# with a seeded Bernoulli(p) mask of known labels, test on the complete
# labels of test (4,952 images). As the official loader, `difficult`
# objects count as negatives (absent) in both splits.
_base_ = ['./coco14_partial_448.py']

dataset_type = 'VOC2007MultiLabel'
# one VOC2007 folder holding Annotations/, ImageSets/Main/ and JPEGImages/
# of both trainval and test
data_root = 'data/VOCdevkit/VOC2007'

train_dataloader = dict(
    dataset=dict(
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            split='trainval',
            difficult_as='negative')))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        difficult_as='negative'))
test_dataloader = val_dataloader
