"""The export's privacy card of a search's best trial states the search's
epsilon (a card with one trial's epsilon would understate the cost)."""
from mmpose_dp.engine.checkpoint_privacy import add_search_card, search_card
from mmpose_dp.export.card import card_markdown, privacy_card
from mmpose_dp.privacy import PrivacyLedger, PrivacyPlan

SEARCH = dict(epsilon=3.5, trials='poisson (mean 4)',
              accountant='RDP repeat-and-select')


def plan():
    return PrivacyPlan(
        unit='image', n_private=100, private_data='abc', target_epsilon=None,
        delta=1e-3, sample_rate=0.1, total_steps=20, noise_multiplier=2.0,
        sigma_source='config', max_grad_norm=0.1, method='DP-SGD',
        labels_public=False, privacy_unit='one image', protected='all',
        public='nothing')


def ledger_state():
    ledger = PrivacyLedger(1e-3)
    for _ in range(20):
        ledger.step(2.0, 0.1)
    return ledger.state_dict()


def test_the_search_epsilon_is_the_guarantee():
    one = privacy_card(ledger_state(), plan(), 'x.pth')
    card = privacy_card(ledger_state(), plan(), 'x.pth', SEARCH)
    assert card['epsilon'] == 3.5 and card['trial_epsilon'] == one['epsilon']
    text = card_markdown(card)
    assert '(3.5, 0.001)-differential' in text
    assert 'best of a private hyperparameter search' in text
    assert 'search' not in one and 'hyperparameter search' not in \
        card_markdown(one).split('What it means')[0]


def test_the_search_card_survives_publishing():
    checkpoint = dict(state_dict={}, meta={})
    add_search_card(checkpoint, SEARCH)
    published = dict(state_dict={}, meta=checkpoint['meta'])
    assert search_card(checkpoint) == search_card(published) == SEARCH
    assert search_card(dict(state_dict={})) is None
