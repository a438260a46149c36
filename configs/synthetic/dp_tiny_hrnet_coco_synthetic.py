# The tiny DP-SGD setting of dp_tiny_hrnet_synthetic.py on generated COCO
# data (tools/make_synthetic_coco.py: 17 keypoints, several people per
# image, detector boxes for evaluation), evaluated with COCO AP/AR
# (MMPose's CocoMetric). The privacy unit is the image (all its people).
_base_ = ['./dp_tiny_hrnet_synthetic.py']

data_root = 'data/synthetic_coco/'
model = dict(head=dict(out_channels=17))
train_dataloader = dict(
    batch_size=16,
    dataset=dict(
        _delete_=True, type='CocoDataset', data_mode='topdown',
        data_root=data_root, ann_file='annotations/person_keypoints_train.json',
        data_prefix=dict(img='images/'), pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    dataset=dict(
        _delete_=True, type='CocoDataset', data_mode='topdown',
        data_root=data_root, ann_file='annotations/person_keypoints_val.json',
        bbox_file=data_root + 'person_detection_results/'
        'val_detections.json', data_prefix=dict(img='images/'),
        test_mode=True, pipeline={{_base_.val_pipeline}}))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True, type='CocoMetric',
    ann_file=data_root + 'annotations/person_keypoints_val.json')
test_evaluator = val_evaluator
