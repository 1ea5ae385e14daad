"""Retrieval and zero-shot metrics on hand-built embeddings whose answers are worked out by hand."""

import pytest
import torch

from wit_builder.clip.evaluate import ranks, recall_at, retrieval_metrics, zeroshot_metrics

E = torch.eye(3)


def E6(i):
    return torch.eye(6)[i]


def test_retrieval_with_several_captions_per_image_and_ties():
    images = E.clone()                      # image i is the unit vector e_i
    # caption -> (vector, its image): image 0 and image 2 have two captions each
    captions = torch.stack([E[0], E[1], E[1], E[2], E[0]])
    caption_image = torch.tensor([0, 0, 1, 2, 2])
    # image->text: image 0's best right caption (c0, score 1) ties with wrong c4 -> rank 1;
    # image 1's right c2 ties with wrong c1 -> rank 1; image 2's right c3 is alone at 1 -> rank 0.
    i2t = ranks(images, captions, torch.arange(3), caption_image)
    assert i2t.tolist() == [1, 1, 0]
    # text->image: c1 (image 0) scores 0 on image 0 while images 1 (1) and 2 (0, a tie) are wrong
    # -> rank 2; likewise c4 (image 2) -> rank 2; the other captions are exact -> rank 0.
    t2i = ranks(captions, images, caption_image, torch.arange(3))
    assert t2i.tolist() == [0, 2, 0, 0, 2]
    assert recall_at(t2i, ks=(1, 2, 3)) == pytest.approx({"R@1": 3 / 5, "R@2": 3 / 5, "R@3": 1.0})
    m = retrieval_metrics(images, captions, caption_image)
    assert m["i2t_R@1"] == pytest.approx(1 / 3) and m["i2t_R@5"] == 1.0
    assert m["t2i_R@1"] == pytest.approx(3 / 5) and m["t2i_R@10"] == 1.0


def test_collapsed_model_scores_zero_and_perfect_model_scores_one():
    n = 20
    same = torch.ones(n, 4) / 2  # every score equal: ties count against, so no hits at all
    assert recall_at(ranks(same, same, torch.arange(n), torch.arange(n)), ks=(1, 10))["R@10"] == 0.0
    feats = torch.nn.functional.normalize(torch.randn(n, 32), dim=1)
    m = retrieval_metrics(feats, feats, torch.arange(n))
    assert all(v == 1.0 for v in m.values())


def test_ranks_are_the_same_in_chunks():
    torch.manual_seed(0)
    q, c = torch.randn(50, 8), torch.randn(30, 8)
    qk, ck = torch.randint(0, 10, (50,)), torch.randint(0, 10, (30,))
    qk[:] = ck[torch.randint(0, 30, (50,))]  # every query has at least one right candidate
    assert torch.equal(ranks(q, c, qk, ck, chunk=7), ranks(q, c, qk, ck, chunk=1000))


def test_zeroshot_top1_top5_and_mean_per_class_recall():
    classifier = torch.eye(6)
    # class 0: three images, all right; class 1: one image, closest to class 2 (wrong at top-1),
    # with class 1 second -> right at top-5.
    images = torch.stack([E6(0), E6(0), E6(0), 0.8 * E6(2) + 0.6 * E6(1)])
    labels = torch.tensor([0, 0, 0, 1])
    m = zeroshot_metrics(images, classifier, labels)
    assert m["top1"] == pytest.approx(3 / 4)
    assert m["top5"] == 1.0
    assert m["mean_per_class_recall"] == pytest.approx((1.0 + 0.0) / 2)  # not 3/4: classes weigh alike


def test_zeroshot_top5_misses_when_five_wrong_classes_score_higher():
    classifier = torch.eye(7)
    image = (torch.tensor([5, 4, 3, 2, 1, 0.5, 0.0]) + 1).unsqueeze(0)  # right class 6 is last
    m = zeroshot_metrics(image, classifier, torch.tensor([6]))
    assert m["top1"] == 0.0 and m["top5"] == 0.0
