"""Nodes for Discomfort's tests only (loaded by the test server, never shipped to users)."""

import time


class DiscomfortTestFail:
    """Raises on demand: makes an execution_error."""

    CATEGORY = "discomfort/testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "fail": ("BOOLEAN", {"default": True}),
                             "message": ("STRING", {"default": "kaboom"})}}

    def run(self, image, fail, message):
        if fail:
            raise ValueError(message)
        return (image,)


class DiscomfortTestSleep:
    """Sleeps in steps, reporting progress and honouring interrupt."""

    CATEGORY = "discomfort/testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "steps": ("INT", {"default": 10, "min": 1}),
                             "step_seconds": ("FLOAT", {"default": 0.1, "min": 0.0})}}

    def run(self, image, steps, step_seconds):
        import comfy.model_management
        import comfy.utils

        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(step_seconds)
            bar.update(1)
        return (image,)


class DiscomfortTestMutate:
    """Scales its input IN PLACE, as a careless node might: a port must not hand it shared memory."""

    CATEGORY = "discomfort/testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        image.mul_(0.5)
        return (image,)


class TestBox:
    """An opaque object standing in for a model: not data, so it must go by reference."""

    def __init__(self, image):
        self.image = image


class DiscomfortTestWrap:
    """IMAGE -> TEST_BOX: a 'model' made from an input value."""

    CATEGORY = "discomfort/testing"
    RETURN_TYPES = ("TEST_BOX",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        return (TestBox(image.clone()),)


class DiscomfortTestUnwrap:
    """TEST_BOX -> IMAGE."""

    CATEGORY = "discomfort/testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"box": ("TEST_BOX",)}}

    def run(self, box):
        return (box.image,)


NODE_CLASS_MAPPINGS = {
    "DiscomfortTestWrap": DiscomfortTestWrap,
    "DiscomfortTestUnwrap": DiscomfortTestUnwrap,
    "DiscomfortTestFail": DiscomfortTestFail,
    "DiscomfortTestSleep": DiscomfortTestSleep,
    "DiscomfortTestMutate": DiscomfortTestMutate,
}
