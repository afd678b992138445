# Your own multi-label set as COCO-style JSON files (images / annotations /
# categories; MultiLabelJSONDataset), 448 x 448, with the pipelines,
# partial-label wrapper and evaluator of the COCO config. Classes are the
# categories sorted by id; images without annotations are kept (all 0).
_base_ = ['./coco14_partial_448.py']

dataset_type = 'MultiLabelJSONDataset'
data_root = 'data/mydata'
# None: the categories of each file. The prompts need their names, sorted
# by id: give them as model.head.classnames (checked against the files
# before training).
classes = None

train_dataloader = dict(
    dataset=dict(
        dataset=dict(
            _delete_=True,
            type=dataset_type,
            data_root=data_root,
            ann_file='annotations/train.json',
            data_prefix='images',
            classes=classes,
            pipeline={{_base_.train_pipeline}})))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/test.json',
        data_prefix='images',
        classes=classes,
        test_mode=True,
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
