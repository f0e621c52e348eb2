"""Avatar-CLIP: a joint text-image embedding trained on the corpus's own renders and captions (§4.5, B.3, B.5).

The paper edits and generates avatars from text through CLIP's shared text-image space. This
package gives the same interface without downloaded CLIP weights: a small image tower over
frontal renders and a frozen pretrained sentence encoder with a trained projection, aligned by a
symmetric contrastive loss (:mod:`rodin_core.text.loss`) on (frontal render, caption variant) pairs.
"""
