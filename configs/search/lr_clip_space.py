# A search space for tools/private_search.py: config keys (as --cfg-options
# spells them) -> distributions. Only keys that leave a trial's privacy curve
# unchanged are accepted (mmpose_dp/privacy/search_space.py: ALLOWED); sigma,
# q and the steps are the same for every trial.
space = {
    'optim_wrapper.optimizer.lr': dict(type='log_uniform', low=3e-4,
                                       high=3e-3),
    'privacy.max_grad_norm': dict(type='choice', values=[0.003, 0.01, 0.03,
                                                         0.1]),
    'optim_wrapper.optimizer.weight_decay': dict(type='choice',
                                                 values=[0.0, 0.01]),
}
