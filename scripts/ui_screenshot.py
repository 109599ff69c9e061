"""Takes docs/ui.png: the search page of a running server, one query typed, in headless Chromium.

    .venv/bin/python scripts/ui_screenshot.py --url http://127.0.0.1:8000 --collection scifact \
        "vitamin D and bone fractures" docs/ui.png

docs/ui.png shows SciFact (5,183 documents) with the default adapter and highlights.
"""

import argparse
import tempfile

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1100,900")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--collection", required=True)
    parser.add_argument("query")
    parser.add_argument("out")
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService("/usr/bin/chromedriver"))
        try:
            driver.get(f"{args.url}/ui/")
            wait = WebDriverWait(driver, 30)
            picker = Select(driver.find_element(By.ID, "collection"))
            wait.until(lambda d: args.collection in [o.get_attribute("value") for o in picker.options])
            picker.select_by_value(args.collection)
            driver.find_element(By.ID, "query").send_keys(args.query)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hits .hit"))
            driver.save_screenshot(args.out)
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
