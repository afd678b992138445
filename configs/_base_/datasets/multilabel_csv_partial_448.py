# Your own multi-label set as CSV tables (MultiLabelCSVDataset), 448 x 448,
# with the pipelines, partial-label wrapper and evaluator of the COCO
# config. Tables: `image,labels[,negatives]` with `;` between labels; with
# a `negatives` column unlisted classes are unknown (-1), without one they
# are absent (0). Give the class list (one name a line) so that train and
# test share it; use the same names as `model.head.classnames`.
_base_ = ['./coco14_partial_448.py']

dataset_type = 'MultiLabelCSVDataset'
data_root = 'data/mydata'
classes = 'data/mydata/classes.txt'

train_dataloader = dict(
    dataset=dict(
        dataset=dict(
            _delete_=True,
            type=dataset_type,
            data_root=data_root,
            ann_file='train.csv',
            data_prefix='images',
            classes=classes,
            pipeline={{_base_.train_pipeline}})))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='test.csv',
        data_prefix='images',
        classes=classes,
        test_mode=True,
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
