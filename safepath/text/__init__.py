"""Text folds and decoders that every reader of disguised reasoning shares.

    normalize.py  evasion-resistant views of a text (folds, rot13, reversed, decoded runs), mapped back to it
    decoding.py   finding and decoding base64 and hex runs, rot13

A package of its own, not a module beside the rules in safepath/detectors/: three consumers in two packages read
these views, the rule stage (detectors/rules.py), the models' input builder (detectors/model_input.py) and the
stream holdback (streaming/holdback.py, which must see the rules' views to know how far a match can still run).
Kept under detectors/, the streaming package would reach into the detectors for a text utility.
"""
