"""Feed a PyTorch training loop: decode in worker processes, batch, to_torch.

Needs torch (any build; a CPU one is enough). Run: python examples/torch_loop.py
"""

import numpy as np
import torch

import snake


def decode(i: int) -> dict[str, object]:
    # Stands in for decoding an image: class 1 images are brighter.
    label = i % 2
    rng = snake.rng(i)  # the same numbers whichever worker runs item i
    image = rng.normal(0.5 * label, 1.0, size=(3, 16, 16)).astype(np.float32)
    return {"image": image, "label": np.int64(label)}


def main() -> None:
    stream = (
        snake.from_iterable(range(4096))
        .shuffle(512, seed=0)
        .par_map(decode, workers=2)
        .batch(64)  # {"image": (64, 3, 16, 16) float32, "label": (64,) int64}
        .to_torch()  # torch.from_numpy: no copy; add device="cuda", pin_memory=True on a GPU
    )
    model = torch.nn.Linear(3 * 16 * 16, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for batch in stream:  # a plain for loop: the pipeline runs in a helper thread
        logits = model(batch["image"].flatten(1))
        loss = torch.nn.functional.cross_entropy(logits, batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"{len(losses)} steps of {type(batch['image']).__name__} {tuple(batch['image'].shape)}")
    print(f"loss went down: {np.mean(losses[-8:]) < np.mean(losses[:8])}")


if __name__ == "__main__":
    main()
